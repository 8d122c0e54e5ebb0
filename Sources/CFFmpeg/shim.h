// C glue for what Swift cannot import from FFmpeg 5.1: function-like macros,
// macro constants built from expressions, and fields whose name changes across versions.
#ifndef LOCKSTEP_CFFMPEG_SHIM_H
#define LOCKSTEP_CFFMPEG_SHIM_H

#include <libavformat/avformat.h>
#include <libavcodec/avcodec.h>
#include <libswscale/swscale.h>
#include <libavutil/avutil.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libavutil/display.h>
#include <libavutil/error.h>
#include <libavutil/crc.h>
// Not FFmpeg's, but C glue all the same: mallopt, which Swift's Glibc module leaves out.
#include <malloc.h>

static inline int lockstep_averror(int posixError) { return AVERROR(posixError); }
static inline int lockstep_averror_eof(void) { return AVERROR_EOF; }
static inline int lockstep_averror_eagain(void) { return AVERROR(EAGAIN); }
static inline int lockstep_averror_invaliddata(void) { return AVERROR_INVALIDDATA; }
static inline int lockstep_averror_decoder_not_found(void) { return AVERROR_DECODER_NOT_FOUND; }
static inline int64_t lockstep_nopts_value(void) { return AV_NOPTS_VALUE; }
static inline AVRational lockstep_time_base_q(void) { return AV_TIME_BASE_Q; }

// FFmpeg 5.1 names; 6.x/7.x renamed them (duration, flags & AV_FRAME_FLAG_KEY).
static inline int64_t lockstep_frame_duration(const AVFrame *f) { return f->pkt_duration; }
static inline void lockstep_frame_set_duration(AVFrame *f, int64_t d) { f->pkt_duration = d; }

// Buffers for `f` laid out as `layout` (a frame av_frame_get_buffer filled: one buffer holding
// every plane), taken from `*pool`, made on first use: a frame handed back to the pool is reused,
// where a fresh one costs page faults on every frame. Any other layout gets its own buffer.
static inline int lockstep_frame_get_pooled_buffer(AVFrame *f, AVBufferPool **pool, const AVFrame *layout) {
    if (!layout->buf[0] || layout->buf[1]) return av_frame_get_buffer(f, 0);
    if (!*pool && !(*pool = av_buffer_pool_init(layout->buf[0]->size, NULL))) return AVERROR(ENOMEM);
    if (!(f->buf[0] = av_buffer_pool_get(*pool))) return AVERROR(ENOMEM);
    for (int i = 0; i < AV_NUM_DATA_POINTERS; i++) {
        f->linesize[i] = layout->linesize[i];
        f->data[i] = layout->data[i] ? f->buf[0]->data + (layout->data[i] - layout->buf[0]->data) : NULL;
    }
    f->extended_data = f->data;
    return 0;
}

// Rotation in degrees from the stream's display matrix side data (0 when absent).
static inline double lockstep_stream_rotation(const AVStream *st) {
    const uint8_t *m = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, NULL);
    if (!m) return 0;
    return av_display_rotation_get((const int32_t *)m);
}

// The `opaque` of the codec or format context that logged a message, NULL for any other
// context. Frame-threaded decoders log from worker threads through copies of their context,
// and the copies keep `opaque`: it tells whose input a message is about.
static inline void *lockstep_log_context_opaque(void *avcl) {
    if (!avcl) return NULL;
    const AVClass *cls = *(const AVClass **)avcl;
    if (cls == avcodec_get_class()) return ((AVCodecContext *)avcl)->opaque;
    if (cls == avformat_get_class()) return ((AVFormatContext *)avcl)->opaque;
    return NULL;
}

// AVERROR text as a static-sized buffer helper.
static inline void lockstep_strerror(int code, char *buf, size_t size) { av_strerror(code, buf, size); }

#endif
