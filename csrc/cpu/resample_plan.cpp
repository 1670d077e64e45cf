// Axis plans: Pillow's coefficient tables, their SIMD layouts, and the per-thread cache.
#include "cpu/resample_plan.h"

#include "cpu/resample_passes.h"

#include <algorithm>
#include <cstdlib>
#include <memory>

namespace mmcurate::cpu {

namespace {

struct SplitCoeff {
  int16_t hi, lo;
};

SplitCoeff split(int32_t c) {
  // Arithmetic shift: hi = floor(c / 2^S), lo = c - hi * 2^S in [0, 2^S).
  return SplitCoeff{int16_t(c >> kSplitShift), int16_t(c & ((1 << kSplitShift) - 1))};
}

bool split_is_exact(const AxisPlan& p) {
  constexpr int64_t kHiLimit = int64_t(1) << (kSplitShift + 15);  // hi in [-2^15, 2^15)
  constexpr int64_t kSumLimit = (int64_t(1) << 31) - 1 - kernels::kResampleRoundHalf;
  for (int i = 0; i < p.end - p.begin; ++i) {
    int64_t abs_sum = 0;
    const int32_t* c = p.coeffs(i);
    for (int t = 0; t < p.taps(i); ++t) {
      if (c[t] < -kHiLimit || c[t] >= kHiLimit) return false;
      abs_sum += std::abs(int64_t(c[t]));
    }
    if (255 * abs_sum > kSumLimit) return false;
  }
  return true;
}

void build_horizontal_layout(AxisPlan& p) {
  const int n = p.end - p.begin;
  p.hchunks.resize(n);
  p.hoff.resize(n);
  int64_t total = 0;
  for (int i = 0; i < n; ++i) {
    p.hchunks[i] = (p.taps(i) + kChunkTaps - 1) / kChunkTaps;
    p.hoff[i] = int(total);
    total += int64_t(p.hchunks[i]) * 2 * kChunkTaps;
  }
  p.hk.assign(size_t(total), 0);
  for (int i = 0; i < n; ++i) {
    const int32_t* c = p.coeffs(i);
    int16_t* out = p.hk.data() + p.hoff[i];
    for (int t = 0; t < p.taps(i); ++t) {
      const int chunk = t / kChunkTaps, lane = t % kChunkTaps;
      const SplitCoeff s = split(c[t]);
      out[chunk * 2 * kChunkTaps + lane] = s.hi;
      out[chunk * 2 * kChunkTaps + kChunkTaps + lane] = s.lo;
    }
  }
}

void build_vertical_layout(AxisPlan& p) {
  const int n = p.end - p.begin;
  p.vstride = (p.ksize + 1) / 2;
  p.vhi.assign(size_t(n) * p.vstride, 0);
  p.vlo.assign(size_t(n) * p.vstride, 0);
  auto pack = [](int16_t a, int16_t b) { return int32_t(uint32_t(uint16_t(a)) | (uint32_t(uint16_t(b)) << 16)); };
  for (int i = 0; i < n; ++i) {
    const int32_t* c = p.coeffs(i);
    const int taps = p.taps(i);
    for (int t = 0; t < taps; t += 2) {
      const SplitCoeff a = split(c[t]);
      const SplitCoeff b = t + 1 < taps ? split(c[t + 1]) : SplitCoeff{0, 0};
      p.vhi[size_t(i) * p.vstride + t / 2] = pack(a.hi, b.hi);
      p.vlo[size_t(i) * p.vstride + t / 2] = pack(a.lo, b.lo);
    }
  }
}

struct PlanCache {
  struct Slot {
    std::unique_ptr<AxisPlan> plan;
    uint64_t last_use = 0;
  };
  Slot slots[kPlanCacheSlots];
  uint64_t clock = 0;
  std::vector<double> coeffs_f64;  // build scratch
};

PlanCache& plan_cache() {
  thread_local PlanCache cache;
  return cache;
}

}  // namespace

void build_axis_plan(AxisPlan& p) {
  const int n = p.end - p.begin;
  p.ksize = kernels::resample_ksize(p.in_size, p.out_size, p.filter);
  const size_t nk = size_t(n) * p.ksize;
  auto& scratch = plan_cache().coeffs_f64;
  if (scratch.size() < nk) scratch.resize(nk);
  p.bounds.resize(size_t(n) * 2);
  p.k.resize(nk);
  kernels::resample_precompute(p.in_size, p.out_size, p.filter, p.begin, p.end, p.ksize, p.bounds.data(),
                               scratch.data());
  kernels::resample_normalize(scratch.data(), int64_t(nk), p.k.data());
  p.first_input = p.in_size;
  p.last_input = 0;
  for (int i = 0; i < n; ++i) {
    p.first_input = std::min(p.first_input, p.first(i));
    p.last_input = std::max(p.last_input, p.first(i) + p.taps(i));
  }
  p.simd_exact = split_is_exact(p);
  if (p.simd_exact) {
    build_horizontal_layout(p);
    build_vertical_layout(p);
  } else {
    p.hchunks.clear();
    p.hoff.clear();
    p.hk.clear();
    p.vstride = 0;
    p.vhi.clear();
    p.vlo.clear();
  }
}

std::atomic<bool>& resample_simd_enabled() {
  static std::atomic<bool> enabled{true};
  return enabled;
}

const AxisPlan& axis_plan(int in_size, int out_size, ResampleFilter filter, int begin, int end) {
  PlanCache& c = plan_cache();
  ++c.clock;
  PlanCache::Slot* victim = &c.slots[0];
  for (auto& s : c.slots) {
    const AxisPlan* p = s.plan.get();
    if (p && p->in_size == in_size && p->out_size == out_size && p->filter == filter && p->begin == begin &&
        p->end == end) {
      s.last_use = c.clock;
      return *p;
    }
    if (!s.plan || (victim->plan && s.last_use < victim->last_use)) victim = &s;
  }
  if (!victim->plan) victim->plan = std::make_unique<AxisPlan>();
  AxisPlan& p = *victim->plan;
  p.in_size = in_size;
  p.out_size = out_size;
  p.filter = filter;
  p.begin = begin;
  p.end = end;
  try {
    build_axis_plan(p);
  } catch (...) {
    victim->plan.reset();  // never leave a half-built plan under a valid key
    throw;
  }
  victim->last_use = c.clock;
  return p;
}

}  // namespace mmcurate::cpu
