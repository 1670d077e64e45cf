// Python bindings for the Hamming search (mmcurate.ops.hamming validates inputs before calling these).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mmcurate/hamming.h"
#include "python/registry.h"

namespace py = pybind11;

namespace {

using mmcurate::HammingPairsMethod;

// A numpy array that owns `v` (moved to the heap, freed by a capsule): no copy of the result.
template <typename T>
py::array_t<T> adopt(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, owned->data(), free_when_done);
}

HammingPairsMethod parse_method(const std::string& method) {
  if (method == "auto") return HammingPairsMethod::kAuto;
  if (method == "mih") return HammingPairsMethod::kMultiIndex;
  if (method == "brute_force") return HammingPairsMethod::kBruteForce;
  throw std::invalid_argument("method must be 'auto', 'mih' or 'brute_force', got '" + method + "'");
}

py::dict plan_dict(const mmcurate::HammingJoinPlan& plan) {
  py::dict d;
  d["method"] = plan.method == HammingPairsMethod::kMultiIndex ? "mih" : "brute_force";
  d["widths"] = py::cast(plan.width);
  d["offsets"] = py::cast(plan.offset);
  d["radii"] = py::cast(plan.radius);
  d["estimated_seconds"] = plan.estimated_seconds;
  d["description"] = plan.describe();
  return d;
}

using Codes = py::array_t<uint64_t, py::array::c_style>;

// Words per code of a database: (n,) is 64-bit, (n, W) is W words (checked by the C++ API: 1 or 4).
int words_of(const Codes& codes, const char* arg) {
  if (codes.ndim() == 1) return 1;
  if (codes.ndim() == 2) return int(codes.shape(1));
  throw std::invalid_argument(std::string(arg) + " must be uint64 (n,) or (n, words)");
}

// Variants per query: (nq,) or (nq, W) is one, (nq, V, W) is V (dihedral: 8).
int variants_of(const Codes& queries, int words) {
  const bool plain = queries.ndim() == 1 ? words == 1 : queries.ndim() == 2 && queries.shape(1) == words;
  if (plain) return 1;
  if (queries.ndim() == 3 && queries.shape(2) == words) return int(queries.shape(1));
  throw std::invalid_argument("queries must have the codes' words per row, as (nq, words) or (nq, variants, words)");
}

// A HammingRangeIndex that holds its database array (the index reads the rows in place).
struct RangeIndexHandle {
  Codes database;
  std::unique_ptr<mmcurate::HammingRangeIndex> index;
};

py::tuple range_result(mmcurate::HammingRangeResult&& r) {
  const py::ssize_t m = py::ssize_t(r.distances.size());
  return py::make_tuple(adopt(std::move(r.pairs), {m, 2}), adopt(std::move(r.distances), {m}), plan_dict(r.plan));
}

}  // namespace

MMCURATE_BINDING(hamming) {
  py::class_<RangeIndexHandle>(m, "HammingRangeIndex")
      .def(py::init([](Codes database, int max_distance, int num_threads, const std::string& method) {
             const int words = words_of(database, "codes");
             const HammingPairsMethod how = parse_method(method);
             auto h = std::make_unique<RangeIndexHandle>();
             h->database = database;
             py::gil_scoped_release release;
             h->index = std::make_unique<mmcurate::HammingRangeIndex>(h->database.data(), h->database.shape(0), words,
                                                                      max_distance, num_threads, how);
             return h;
           }),
           py::arg("codes"), py::arg("max_distance"), py::arg("num_threads") = 0, py::arg("method") = "auto")
      .def(
          "search",
          [](const RangeIndexHandle& h, Codes queries, int num_threads) {
            const int variants = variants_of(queries, h.index->words());
            mmcurate::HammingRangeResult r;
            {
              py::gil_scoped_release release;
              r = h.index->search(queries.data(), queries.shape(0), variants, num_threads);
            }
            return range_result(std::move(r));
          },
          py::arg("queries"), py::arg("num_threads") = 0,
          "Pairs (q, j) with min-over-variants distance <= max_distance, sorted: (pairs, distances, plan info).")
      .def_property_readonly("plan", [](const RangeIndexHandle& h) { return plan_dict(h.index->plan()); })
      .def_property_readonly("memory_bytes", [](const RangeIndexHandle& h) { return h.index->memory_bytes(); })
      .def("__len__", [](const RangeIndexHandle& h) { return h.index->size(); });

  m.def(
      "hamming_pairs",
      [](Codes codes, int max_distance, int num_threads, const std::string& method) {
        const int words = words_of(codes, "codes");
        const HammingPairsMethod how = parse_method(method);
        mmcurate::HammingPairsResult r;
        {
          py::gil_scoped_release release;
          r = mmcurate::hamming_pairs_cpu(codes.data(), codes.shape(0), words, max_distance, num_threads, how);
        }
        const py::ssize_t m = py::ssize_t(r.distances.size());
        py::dict info = plan_dict(r.plan);
        info["n_unique"] = r.n_unique;
        return py::make_tuple(adopt(std::move(r.pairs), {m, 2}), adopt(std::move(r.distances), {m}), info);
      },
      py::arg("codes"), py::arg("max_distance"), py::arg("num_threads") = 0, py::arg("method") = "auto",
      "All pairs i < j within max_distance, sorted by (i, j): (pairs int64[m,2], distances uint8[m], plan info).");

  m.def(
      "hamming_join_plan",
      [](int64_t n_unique, int max_distance, const std::string& method, int words) {
        return plan_dict(mmcurate::plan_hamming_join(n_unique, max_distance, parse_method(method), words));
      },
      py::arg("n_unique"), py::arg("max_distance"), py::arg("method") = "auto", py::arg("words") = 1,
      "The self-join plan (multi-index substrings and radii, or brute force) for n_unique distinct codes.");

  m.def(
      "hamming_knn",
      [](Codes database, int k, py::object queries, int num_threads) {
        const int words = words_of(database, "codes");
        const bool self_search = queries.is_none();
        Codes q = self_search ? database : queries.cast<Codes>();
        const int variants = variants_of(q, words);
        if (k <= 0) throw std::invalid_argument("k must be >= 1, got " + std::to_string(k));
        const py::ssize_t nq = q.shape(0);
        std::vector<int32_t> dist(size_t(nq) * size_t(k));
        std::vector<int64_t> idx(size_t(nq) * size_t(k));
        {
          py::gil_scoped_release release;
          mmcurate::hamming_knn_cpu(database.data(), database.shape(0), q.data(), nq, words, variants, k, self_search,
                                    num_threads, dist.data(), idx.data());
        }
        return py::make_tuple(adopt(std::move(dist), {nq, py::ssize_t(k)}),
                              adopt(std::move(idx), {nq, py::ssize_t(k)}));
      },
      py::arg("codes"), py::arg("k"), py::arg("queries") = py::none(), py::arg("num_threads") = 0,
      "Exact top-k by (distance, index): (distances int32[nq,k], indices int64[nq,k]), padded with -1.");

  m.def(
      "hamming_range",
      [](Codes database, Codes queries, int max_distance, int num_threads, const std::string& method) {
        const int words = words_of(database, "codes");
        const int variants = variants_of(queries, words);
        const HammingPairsMethod how = parse_method(method);
        mmcurate::HammingRangeResult r;
        {
          py::gil_scoped_release release;
          r = mmcurate::hamming_range_cpu(database.data(), database.shape(0), queries.data(), queries.shape(0), words,
                                          variants, max_distance, num_threads, how);
        }
        return range_result(std::move(r));
      },
      py::arg("codes"), py::arg("queries"), py::arg("max_distance"), py::arg("num_threads") = 0,
      py::arg("method") = "auto",
      "Pairs (q, j) with min-over-variants distance <= max_distance, sorted: (pairs int64[m,2], distances uint8[m], "
      "plan info).");
}
