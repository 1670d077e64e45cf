// Python bindings: the template rule over pairs of local-detail grids (curate.local_detail wraps this).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "mmcurate/local_detail.h"
#include "python/registry.h"

namespace py = pybind11;
using namespace mmcurate;

MMCURATE_BINDING(local_detail) {
  m.def(
      "template_pairs",
      [](py::array_t<uint8_t, py::array::c_style> grids_a, py::array_t<uint8_t, py::array::c_style> grids_b,
         py::array_t<int64_t, py::array::c_style | py::array::forcecast> transform,
         py::array_t<int32_t, py::array::c_style | py::array::forcecast> perm, double change, double two_sided,
         int fit_rounds, double tie, int num_threads) {
        if (fit_rounds < 1) throw std::invalid_argument("template_pairs: fit_rounds must be >= 1");
        if (grids_a.ndim() != 2 || grids_b.ndim() != 2 || perm.ndim() != 2 || perm.shape(0) != 8)
          throw std::invalid_argument("template_pairs: grids must be uint8[m, 2 * cells], perm int32[8, cells]");
        const int64_t m = grids_a.shape(0), cells = perm.shape(1);
        if (grids_b.shape(0) != m || transform.size() != m)
          throw std::invalid_argument("template_pairs: grids_a, grids_b and transform must have one row per pair");
        if (grids_a.shape(1) != 2 * cells || grids_b.shape(1) != 2 * cells)
          throw std::invalid_argument("template_pairs: a grid holds 2 * cells bytes (means, then deviations)");
        const int32_t* p = perm.data();
        for (int64_t k = 0; k < perm.size(); ++k)
          if (p[k] < 0 || p[k] >= cells) throw std::invalid_argument("template_pairs: perm indexes past the cells");
        const int64_t* t = transform.data();
        for (int64_t i = 0; i < m; ++i)
          if (t[i] < 0 || t[i] > 7) throw std::invalid_argument("template_pairs: transform must be in 0..7");
        py::array_t<bool> out(m);
        TemplateRule rule;
        rule.change = change;
        rule.two_sided = two_sided;
        rule.fit_rounds = fit_rounds;
        rule.tie = tie;
        {
          py::gil_scoped_release release;
          template_pairs(grids_a.data(), cells * 2, grids_b.data(), cells * 2, t, m, p, int(cells), rule,
                         reinterpret_cast<uint8_t*>(out.mutable_data()), num_threads);
        }
        return out;
      },
      py::arg("grids_a"), py::arg("grids_b"), py::arg("transform"), py::arg("perm"), py::arg("change"),
      py::arg("two_sided"), py::arg("fit_rounds"), py::arg("tie"), py::arg("num_threads") = 0,
      "bool[m]: pair i is a template pair (curate.local_detail's rule), a's cells read through perm[transform[i]].");
}
