// Intel AMX tiles for the int8 prefill GEMM (level amx: AVX-512 VNNI plus AMX-INT8).
//
// One tdpbusd multiplies a 16 x 64 tile of activation bytes by a 64 x 16 tile of weight bytes
// into 16 x 16 int32 sums: 16384 multiply-adds per instruction, where a 512-bit vpdpbusd does
// 64. The operands are exactly the VNNI path's: activations encoded as code + 128 (u8), weights
// as int8, packed [K / 4][32 channels][4] (linear.h, a8w8_gemm), so a 16 x 64-byte weight tile
// is 16 consecutive groups of 4 k values for 16 channels, read with a row stride of 128 bytes.
// Sums are exact in int32, like the VNNI path: both give the same integers, and the epilogue
// that corrects the encoding and rescales is shared.
//
// Linux hands the (large) tile state only to a process that asks for it; if the request is
// refused (an old kernel, a hypervisor that hides it), amx_ready() is false and every row takes
// the VNNI micro-kernel instead.
#pragma once

#if defined(GSK_LEVEL_AMX)

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace gsk {

constexpr int64_t kAmxRows = 32;  // rows of one AMX micro-tile (two 16-row A tiles)
constexpr int64_t kAmxK = 64;     // k values per tile step (64 bytes per tile row)

// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), asked once per process.
inline bool amx_ready() {
  constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
  static const bool ready = syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  return ready;
}

// Palette 1 with eight 16-row x 64-byte tiles: 0-3 accumulators, 4-5 activations, 6-7 weights.
// Tile configuration is per thread; each thread sets it before a run of micro-tiles.
inline void amx_configure() {
  struct alignas(64) Config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
  } config{};
  config.palette = 1;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

inline void amx_release() { _tile_release(); }

// c[32 rows][32 channels] = a[32 rows][kblocks * 64] (encoded, row stride lda bytes) times the
// packed panel bp (kblocks * 16 groups of [32 channels][4]); c has row stride ldc int32s and
// room for all 32 channels.
inline void micro_amx(int64_t kblocks, const uint8_t* a, int64_t lda, const int8_t* bp, int32_t* c, int64_t ldc) {
  constexpr int64_t kPanelRow = 128;  // bytes of one group of 4 k values for 32 channels
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    const uint8_t* ak = a + kb * kAmxK;
    const int8_t* bk = bp + kb * (kAmxK / 4) * kPanelRow;
    _tile_loadd(4, ak, lda);
    _tile_loadd(5, ak + 16 * lda, lda);
    _tile_loadd(6, bk, kPanelRow);
    _tile_loadd(7, bk + 64, kPanelRow);
    _tile_dpbusd(0, 4, 6);
    _tile_dpbusd(1, 4, 7);
    _tile_dpbusd(2, 5, 6);
    _tile_dpbusd(3, 5, 7);
  }
  const int64_t stride = ldc * static_cast<int64_t>(sizeof(int32_t));
  _tile_stored(0, c, stride);
  _tile_stored(1, c + 16, stride);
  _tile_stored(2, c + 16 * ldc, stride);
  _tile_stored(3, c + 16 * ldc + 16, stride);
}

}  // namespace gsk

#endif
