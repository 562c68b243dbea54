/* Minimal, independent FlatBuffers code for the WorkManager worker wire format
 * (schemas/worker_api.fbs): an encoder for CloudEvent (and WorkerResponse, for tests) and a
 * bounds-checked reader for WorkerResponse / CloudEvent. Little-endian, no file identifier,
 * no size prefix. */
#ifndef HARNESS_FB_H
#define HARNESS_FB_H

#include <stddef.h>
#include <stdint.h>

/* A string or byte vector inside a buffer (reader) or supplied by the caller (encoder).
 * p == NULL means "absent". Strings are not guaranteed NUL-terminated for callers: use len. */
typedef struct {
    const uint8_t *p;
    uint32_t len;
} fb_span;

typedef struct {
    fb_span name, value;
} fb_ext;

/* Slot order = schema order (vtable slots 4, 6, 8, ...). */
typedef struct {
    fb_span id, type, source, specversion, datacontenttype, dataschema, subject, time;
    fb_span data;    /* [ubyte] */
    int has_exts;    /* 1: write the extensions vector (possibly empty) */
    uint32_t n_exts; /* encoder: entries in exts; reader: entries read */
    fb_ext *exts;    /* reader: malloc'd array (free with fb_event_free) */
} fb_event;

typedef struct {
    int has_event;
    fb_event event;
    fb_span error_message;
} fb_response;

/* Span helper for a NUL-terminated C string (NULL → absent). */
fb_span fb_cstr(const char *s);

/* Encoders: return a malloc'd buffer (free with free()) and its size in *len; NULL on OOM. */
uint8_t *fb_encode_event(const fb_event *ev, size_t *len);
uint8_t *fb_encode_response(const fb_response *r, size_t *len);

/* Readers: verify every offset and length against len before use. Return 0 on success, -1 on a
 * malformed buffer (err gets a reason). The spans point into buf. On success free with
 * fb_event_free / fb_response_free. buf needs no particular alignment. */
int fb_read_event(const uint8_t *buf, size_t len, fb_event *out, char *err, size_t errlen);
int fb_read_response(const uint8_t *buf, size_t len, fb_response *out, char *err, size_t errlen);
void fb_event_free(fb_event *ev);
void fb_response_free(fb_response *r);

/* Byte-level self tests of this file; returns number of failures (prints them to stderr). */
int fb_self_test(void);

#endif
