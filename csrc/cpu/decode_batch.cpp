// Batched decode: samples are independent, so one bad blob never touches the others.
#include "mmcurate/decode.h"
#include "mmcurate/parallel.h"

namespace mmcurate {

std::vector<DecodeResult> decode_batch(const std::vector<ByteSpan>& blobs, const DecodeOptions& opts, int num_threads) {
  std::vector<DecodeResult> results(blobs.size());
  // decode_image turns every data error into a status; it throws only for invalid options, which
  // parallel_for rethrows here after stopping the workers.
  parallel_for(
      int64_t(blobs.size()), num_threads,
      [&](int64_t i) { results[size_t(i)] = decode_image(blobs[size_t(i)].data, blobs[size_t(i)].size, opts); }, 1);
  return results;
}

}  // namespace mmcurate
