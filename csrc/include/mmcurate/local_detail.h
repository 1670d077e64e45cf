// The template rule of curate.local_detail (its NumPy implementation is this kernel's oracle): for pairs of
// local-detail grids (cell luma means then cell deviations, uint8), whether each image has local detail the
// other lacks, after fitting the second image's means to the first's by an affine map refitted on the cells
// that agree. Called for every verified PDQ link (templates: keep / drop) and, in a cluster of template
// variants, for each member against an anchor.
#pragma once
#include <cstdint>

namespace mmcurate {

struct TemplateRule {
  double change = 8.0;     // luma levels a cell's mean or deviation must move by to count as changed
  double two_sided = 0.2;  // share of the changed cells that must go each way
  int fit_rounds = 3;      // weighted least-squares rounds, each dropping the cells that disagree (>= 1)
  double tie = 1e-6;       // a residual passes a threshold only by more than this (integer residuals of an exact
                           // fit must not be decided by the last bits of the sums)
};

// m pairs: grids_a[i] and grids_b[i] (2 * cells bytes each, row strides in bytes), a's cells read through
// perm[transform[i] * cells + c] (the dihedral transform mapping a onto b; perm holds 8 * cells source
// indices, identity first). out[i] = 1 for a template pair. Parallel over pairs.
void template_pairs(const uint8_t* grids_a, int64_t stride_a, const uint8_t* grids_b, int64_t stride_b,
                    const int64_t* transform, int64_t m, const int32_t* perm, int cells, const TemplateRule& rule,
                    uint8_t* out, int num_threads = 0);

}  // namespace mmcurate
