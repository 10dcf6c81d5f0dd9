/* The NVIDIA Video Codec SDK and CUDA driver API as FFmpeg's
 * nv-codec-headers ship them (Debian: libffmpeg-nvenc-dev). The cuvid
 * headers need the CUDA types first; every function comes as a `t*`
 * function-pointer type, for loading at run time. */
#include <ffnvcodec/dynlink_cuda.h>
#include <ffnvcodec/dynlink_cuviddec.h>
#include <ffnvcodec/dynlink_nvcuvid.h>
#include <ffnvcodec/nvEncodeAPI.h>
