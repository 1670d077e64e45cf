// Chooses how the Hamming self-join runs: multi-index hashing (Norouzi, Punjani & Fleet, "Fast exact
// search in Hamming space with multi-index hashing", TPAMI 2014) or a tiled brute force, from a cost
// model of uniformly distributed codes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "mmcurate/hamming.h"

namespace mmcurate {
namespace {

// Single-thread costs in seconds, measured on the join loops themselves (x86-64 AVX2, 1M codes, 1 thread).
// The two distance costs depend on the code width: [0] for 64-bit codes, [1] for 256-bit codes.
struct Costs {
  double brute_force_pair;  // one distance in the streaming triangle loop (4 per AVX2 step)
  double verify_pair;       // one candidate in the bucket-vs-bucket block loop
};
constexpr Costs kCosts[2] = {{0.28e-9, 0.55e-9}, {1.2e-9, 1.1e-9}};
constexpr double kProbe = 10.0e-9;      // one neighbouring-bucket lookup (a random offsets read)
constexpr double kIndexCode = 10.0e-9;  // counting-sort one code into a substring's CSR index
constexpr double kIndexBucket = 1.0e-9;  // clearing/scanning one bucket offset
// One candidate of the query search, verified through its id against the database row (a random read): 64-
// and 256-bit codes.
constexpr double kGatherPair[2] = {3.0e-9, 4.0e-9};

// What choosing a multi-index plan costs (the widths x radii search below, ~0.5 ms at 256 bits): a one-off join
// or search whose brute force is estimated below it is taken without searching, since no plan can save more than
// the brute force's whole cost (a join of many small buckets, as the sharded pigeonhole join makes, would
// otherwise be all planning). A persistent index is planned as before: it is searched many times.
constexpr double kPlanningSeconds = 2.0e-4;

// Offsets arrays are 4 bytes per bucket; keep them O(n) (and at most 64 MiB) so memory stays O(n + output).
int max_substring_width(int64_t n_unique) {
  int w = 16;
  while (w < 24 && (int64_t(1) << (w + 1)) <= 8 * n_unique) ++w;
  return w;
}

double ball_size(int width, int radius) {  // sum_{t=0..radius} C(width, t)
  double total = 0.0, term = 1.0;
  for (int t = 0; t <= radius && t <= width; ++t) {
    total += term;
    term = term * double(width - t) / double(t + 1);
  }
  return total;
}

// What is searched: n indexed codes, probed either by themselves (the self-join) or by `queries` codes.
struct SearchShape {
  double n = 0, queries = 0;  // queries 0: the self-join
  bool build = true;          // the index build counts (false: a persistent index, built once for many searches)
  double pairs() const { return queries > 0 ? n * queries : n * (n - 1) / 2.0; }
  // Bucket lookups per unit of ball: each occupied bucket probes its neighbours, each unordered bucket
  // pair once (self-join), or every query probes its own ball.
  double probing(double buckets) const { return queries > 0 ? queries : buckets * -std::expm1(-n / buckets) / 2.0; }
};

// Cost of probing one substring of `width` bits within `radius` (radius -1: not probed).
double substring_cost(const SearchShape& shape, int width, int radius, double verify_pair) {
  if (radius < 0) return 0.0;
  const double buckets = std::ldexp(1.0, width);
  const double ball = ball_size(width, radius);
  const double probes = shape.probing(buckets) * ball;
  const double candidates = shape.pairs() * ball / buckets;  // uniform codes: a ball/buckets share of all pairs
  const double build = shape.build ? kIndexCode * shape.n + kIndexBucket * buckets : 0.0;
  return build + kProbe * probes + verify_pair * candidates;
}

// Best radius allocation for fixed widths: minimise the summed cost subject to sum(radius + 1) == r + 1
// (the generalised pigeonhole split; radii may differ between substrings, and -1 drops one).
bool allocate_radii(const SearchShape& shape, const std::vector<int>& widths, int r, double verify_pair,
                    std::vector<int>& radii, double& cost) {
  const int m = int(widths.size()), budget = r + 1;
  const double inf = std::numeric_limits<double>::infinity();
  // Widths take at most two values (w and w + 1): cost each (width, radius) once, not per DP cell.
  std::vector<std::vector<double>> cost_of(65);
  for (int w : widths)
    if (cost_of[w].empty())
      for (int s = -1; s <= std::min(w, budget - 1); ++s)
        cost_of[w].push_back(substring_cost(shape, w, s, verify_pair));
  std::vector<std::vector<double>> best(m + 1, std::vector<double>(budget + 1, inf));
  std::vector<std::vector<int>> choice(m + 1, std::vector<int>(budget + 1, -1));
  best[0][0] = 0.0;
  for (int t = 0; t < m; ++t) {
    for (int used = 0; used <= budget; ++used) {
      if (best[t][used] == inf) continue;
      for (int s = -1; s <= widths[t] && used + s + 1 <= budget; ++s) {
        const double c = best[t][used] + cost_of[widths[t]][s + 1];
        if (c < best[t + 1][used + s + 1]) {
          best[t + 1][used + s + 1] = c;
          choice[t + 1][used + s + 1] = s;
        }
      }
    }
  }
  if (best[m][budget] == inf) return false;
  radii.assign(m, -1);
  for (int t = m, used = budget; t > 0; --t) {
    radii[t - 1] = choice[t][used];
    used -= radii[t - 1] + 1;
  }
  cost = best[m][budget];
  return true;
}

HammingJoinPlan plan_search(const SearchShape& shape, int max_width, int max_distance, HammingPairsMethod method,
                            int words, double verify_pair) {
  check_hamming_args(words, max_distance);
  const Costs& costs = kCosts[words == 1 ? 0 : 1];
  const int bits = 64 * words;
  HammingJoinPlan brute;
  brute.method = HammingPairsMethod::kBruteForce;
  brute.estimated_seconds = costs.brute_force_pair * shape.pairs();
  if (method == HammingPairsMethod::kBruteForce) return brute;
  // Not for a persistent index (build false): its estimate is per query, and it serves many.
  if (method != HammingPairsMethod::kMultiIndex && shape.build && brute.estimated_seconds <= kPlanningSeconds)
    return brute;

  HammingJoinPlan best;
  best.estimated_seconds = std::numeric_limits<double>::infinity();
  for (int m = 2; m <= bits / 4; ++m) {  // substrings of at least 4 bits
    std::vector<int> widths(m, bits / m);
    for (int t = 0; t < bits % m; ++t) widths[t] += 1;  // unequal widths when m does not divide the bits
    if (widths[0] > max_width) continue;
    std::vector<int> radii;
    double cost;
    if (!allocate_radii(shape, widths, max_distance, verify_pair, radii, cost) || cost >= best.estimated_seconds)
      continue;
    best.method = HammingPairsMethod::kMultiIndex;
    best.width = widths;
    best.radius = radii;
    best.offset.assign(m, 0);
    for (int t = 1; t < m; ++t) best.offset[t] = best.offset[t - 1] + widths[t - 1];
    best.estimated_seconds = cost;
  }
  if (method == HammingPairsMethod::kMultiIndex) {
    if (best.width.empty()) throw std::logic_error("no multi-index plan found");  // unreachable: 16-bit fits
    return best;
  }
  return best.estimated_seconds < brute.estimated_seconds ? best : brute;
}

}  // namespace

std::string HammingJoinPlan::describe() const {
  std::ostringstream os;
  if (method == HammingPairsMethod::kBruteForce) {
    os << "brute_force";
  } else {
    os << "multi_index m=" << width.size() << " widths=";
    for (size_t t = 0; t < width.size(); ++t) os << (t ? "," : "") << width[t];
    os << " radii=";
    for (size_t t = 0; t < radius.size(); ++t) os << (t ? "," : "") << radius[t];
  }
  os << " est=" << estimated_seconds << "s";
  return os.str();
}

void check_hamming_args(int words, int max_distance) {
  if (words != 1 && words != 4)
    throw std::invalid_argument("codes must be 64- or 256-bit (1 or 4 uint64 words), got " + std::to_string(words) +
                                " words");
  const int limit = words == 1 ? 64 : 255;  // distances are uint8
  if (max_distance < 0 || max_distance > limit)
    throw std::invalid_argument("max_distance must be in 0.." + std::to_string(limit) + ", got " +
                                std::to_string(max_distance));
}

HammingJoinPlan plan_hamming_join(int64_t n_unique, int max_distance, HammingPairsMethod method, int words) {
  const double n = double(std::max<int64_t>(n_unique, 0));
  return plan_search({n, 0.0}, max_substring_width(n_unique), max_distance, method, words,
                     kCosts[words == 1 ? 0 : 1].verify_pair);
}

HammingJoinPlan plan_hamming_range(int64_t n, int64_t query_codes, int max_distance, HammingPairsMethod method,
                                   int words) {
  const bool persistent = query_codes <= 0;
  // A persistent index keeps every substring at once: at most n buckets each (4 bytes per code for the offsets).
  int width = max_substring_width(n);
  while (persistent && width > 16 && (int64_t(1) << width) > n) --width;
  const SearchShape shape{double(std::max<int64_t>(n, 0)), double(std::max<int64_t>(query_codes, 1)), !persistent};
  const int w = words == 1 ? 0 : 1;  // a kept index verifies through ids, a one-search one scans bucket copies
  return plan_search(shape, width, max_distance, method, words, persistent ? kGatherPair[w] : kCosts[w].verify_pair);
}

}  // namespace mmcurate
