// vodfarm's CUDA scalers, compiled at run time by NVRTC (src/nvrtc.rs)
// with --fmad=false so that every float operation rounds exactly as the
// CPU reference (src/reference.rs) does: the two agree bit for bit, and
// src/reference.rs is the specification of this file.
//
// Source: NV12 (8-bit) or P010 (10 bits in the high bits of 16) decoded
// surface, pitched. Area filter per axis: output sample i covers
// [i*s + off, (i+1)*s + off) in source samples, each source sample
// weighted by its overlap / s, edges replicated. Chroma siting (H.264's
// chroma_sample_location) shifts chroma footprints by `off`.

struct Rung {
    unsigned char *y, *u, *v;   // planar 4:2:0 8-bit output
    int pitch_y, pitch_c;       // bytes per row
    int width, height;          // luma size (even)
};

#define MAX_RUNGS 8

struct Ladder {
    Rung rung[MAX_RUNGS];
    int count;
};

__device__ __forceinline__ float sample(const unsigned char *plane, int pitch, int x, int y,
                                        int stride, int ten_bit) {
    const unsigned char *row = plane + (size_t)y * pitch;
    if (ten_bit) {
        const unsigned short *r16 = (const unsigned short *)row;
        return (float)(r16[x * stride] >> 6);
    }
    return (float)row[x * stride];
}

// The area-weighted mean over the footprint of output (ox, oy) in a plane
// of `sw` x `sh` samples (stride 1 for luma, 2 for interleaved U/V).
__device__ float area(const unsigned char *plane, int pitch, int sw, int sh, int stride,
                      int ten_bit, float sx, float sy, float offx, float offy, int ox, int oy) {
    float x0 = (float)ox * sx + offx, x1 = x0 + sx;
    float y0 = (float)oy * sy + offy, y1 = y0 + sy;
    int kx0 = (int)floorf(x0), kx1 = (int)ceilf(x1);
    int ky0 = (int)floorf(y0), ky1 = (int)ceilf(y1);
    float total = 0.0f;
    for (int ky = ky0; ky < ky1; ky++) {
        float wy = (fminf(y1, (float)(ky + 1)) - fmaxf(y0, (float)ky)) / sy;
        int cy = min(max(ky, 0), sh - 1);
        float row = 0.0f;
        for (int kx = kx0; kx < kx1; kx++) {
            float wx = (fminf(x1, (float)(kx + 1)) - fmaxf(x0, (float)kx)) / sx;
            int cx = min(max(kx, 0), sw - 1);
            row = row + wx * sample(plane, pitch, cx, cy, stride, ten_bit);
        }
        total = total + wy * row;
    }
    return total;
}

__device__ __forceinline__ unsigned char to8(float v, int ten_bit) {
    float x = ten_bit ? v * 0.25f : v;
    x = floorf(x + 0.5f);
    return (unsigned char)fminf(fmaxf(x, 0.0f), 255.0f);
}

// One launch for the whole ladder: blockIdx.z is the rung; each thread
// writes one 2x2 luma quad and the chroma pair at it.
extern "C" __global__ void vodfarm_ladder(const unsigned char *src_y, const unsigned char *src_uv,
                                          int src_pitch, int src_w, int src_h, int ten_bit,
                                          float chroma_off_x_unit, float chroma_off_y_unit,
                                          Ladder ladder) {
    int r = blockIdx.z;
    if (r >= ladder.count) return;
    Rung o = ladder.rung[r];
    int cx = blockIdx.x * blockDim.x + threadIdx.x;
    int cy = blockIdx.y * blockDim.y + threadIdx.y;
    int cw = (o.width + 1) / 2, ch = (o.height + 1) / 2;
    if (cx >= cw || cy >= ch) return;
    float sx = (float)src_w / (float)o.width;
    float sy = (float)src_h / (float)o.height;
    for (int dy = 0; dy < 2; dy++) {
        for (int dx = 0; dx < 2; dx++) {
            int x = cx * 2 + dx, y = cy * 2 + dy;
            if (x < o.width && y < o.height) {
                float v = area(src_y, src_pitch, src_w, src_h, 1, ten_bit, sx, sy, 0.0f, 0.0f, x, y);
                o.y[(size_t)y * o.pitch_y + x] = to8(v, ten_bit);
            }
        }
    }
    int scw = (src_w + 1) / 2, sch = (src_h + 1) / 2;
    float csx = (float)scw / (float)cw, csy = (float)sch / (float)ch;
    float offx = chroma_off_x_unit * (1.0f - csx), offy = chroma_off_y_unit * (1.0f - csy);
    int stride = 2;
    float u = area(src_uv, src_pitch, scw, sch, stride, ten_bit, csx, csy, offx, offy, cx, cy);
    const unsigned char *src_v = src_uv + (ten_bit ? 2 : 1);
    float v = area(src_v, src_pitch, scw, sch, stride, ten_bit, csx, csy, offx, offy, cx, cy);
    o.u[(size_t)cy * o.pitch_c + cx] = to8(u, ten_bit);
    o.v[(size_t)cy * o.pitch_c + cx] = to8(v, ten_bit);
}

// Thumbnails and sprite tiles: RGB24 (BT.709, limited range in, full range
// out) at (tile_x, tile_y) of an RGB image `dst` of pitch `dst_pitch`.
extern "C" __global__ void vodfarm_thumb(const unsigned char *src_y, const unsigned char *src_uv,
                                         int src_pitch, int src_w, int src_h, int ten_bit,
                                         float chroma_off_x, float chroma_off_y,
                                         unsigned char *dst, int dst_pitch, int tile_x, int tile_y,
                                         int out_w, int out_h) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    float sx = (float)src_w / (float)out_w, sy = (float)src_h / (float)out_h;
    float scale = ten_bit ? 0.25f : 1.0f;
    float yv = area(src_y, src_pitch, src_w, src_h, 1, ten_bit, sx, sy, 0.0f, 0.0f, x, y) * scale;
    int scw = (src_w + 1) / 2, sch = (src_h + 1) / 2;
    float csx = sx * 0.5f, csy = sy * 0.5f;
    float u = area(src_uv, src_pitch, scw, sch, 2, ten_bit, csx, csy, chroma_off_x, chroma_off_y, x, y) * scale;
    float v = area(src_uv + (ten_bit ? 2 : 1), src_pitch, scw, sch, 2, ten_bit, csx, csy,
                   chroma_off_x, chroma_off_y, x, y) * scale;
    float l = (yv - 16.0f) * (255.0f / 219.0f);
    float cb = (u - 128.0f) * (255.0f / 224.0f);
    float cr = (v - 128.0f) * (255.0f / 224.0f);
    float rgb[3];
    rgb[0] = l + 1.5748f * cr;
    rgb[1] = l - 0.187324f * cb - 0.468124f * cr;
    rgb[2] = l + 1.8556f * cb;
    unsigned char *p = dst + (size_t)(tile_y + y) * dst_pitch + (size_t)(tile_x + x) * 3;
    for (int c = 0; c < 3; c++) {
        p[c] = (unsigned char)fminf(fmaxf(floorf(rgb[c] + 0.5f), 0.0f), 255.0f);
    }
}
