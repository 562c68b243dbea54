#include "fb.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- encoder -------------------
 * A forward builder: objects are appended front to back. uoffsets (unsigned, relative to where
 * they are stored) always point forward, so the root offset comes first, each table is written
 * after its vtable (soffset = table - vtable > 0), and the strings/vectors a table refers to are
 * appended after it and patched in. */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int oom;
} fbb;

static void fbb_reserve(fbb *b, size_t n) {
    if (b->oom) return;
    if (b->len + n <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    uint8_t *np = realloc(b->p, cap);
    if (!np) {
        b->oom = 1;
        return;
    }
    b->p = np;
    b->cap = cap;
}

static size_t fbb_put(fbb *b, const void *src, size_t n) {
    fbb_reserve(b, n);
    size_t at = b->len;
    if (b->oom) return at;
    if (src)
        memcpy(b->p + at, src, n);
    else
        memset(b->p + at, 0, n);
    b->len += n;
    return at;
}

static void fbb_align(fbb *b, size_t a) {
    while (b->len % a) fbb_put(b, NULL, 1);
}

static void put_le16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put_le32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static size_t fbb_u32(fbb *b, uint32_t v) {
    uint8_t t[4];
    put_le32(t, v);
    fbb_align(b, 4);
    return fbb_put(b, t, 4);
}

/* Patch the uoffset stored at `at` to point at `target` (target > at). */
static void fbb_patch(fbb *b, size_t at, size_t target) {
    if (b->oom) return;
    put_le32(b->p + at, (uint32_t)(target - at));
}

/* A string or [ubyte]: u32 length (4-aligned), bytes, and for strings a NUL. */
static size_t fbb_bytes(fbb *b, fb_span s, int nul) {
    size_t at = fbb_u32(b, s.len);
    fbb_put(b, s.p, s.len);
    if (nul) fbb_put(b, NULL, 1);
    return at;
}

/* Writes a vtable + table whose fields are all uoffsets; present[i] says whether slot i is set.
 * Returns the table position; slot_pos[i] receives where slot i's uoffset is to be patched. */
static size_t fbb_table(fbb *b, int nfields, const int *present, size_t *slot_pos) {
    int last = -1, count = 0;
    for (int i = 0; i < nfields; i++)
        if (present[i]) {
            last = i;
            count++;
        }
    uint16_t vtsize = (uint16_t)(4 + 2 * (last + 1));
    uint16_t tblsize = (uint16_t)(4 + 4 * count);
    fbb_align(b, 2);
    size_t vt = fbb_put(b, NULL, vtsize);
    fbb_align(b, 4);
    size_t tbl = fbb_put(b, NULL, tblsize);
    if (b->oom) return tbl;
    put_le16(b->p + vt, vtsize);
    put_le16(b->p + vt + 2, tblsize);
    put_le32(b->p + tbl, (uint32_t)(int32_t)(tbl - vt));
    uint16_t fo = 4;
    for (int i = 0; i <= last; i++) {
        if (present[i]) {
            put_le16(b->p + vt + 4 + 2 * i, fo);
            slot_pos[i] = tbl + fo;
            fo += 4;
        } else {
            put_le16(b->p + vt + 4 + 2 * i, 0);
        }
    }
    return tbl;
}

static size_t fbb_event(fbb *b, const fb_event *ev) {
    const fb_span *strs[8] = {&ev->id, &ev->type, &ev->source, &ev->specversion,
                              &ev->datacontenttype, &ev->dataschema, &ev->subject, &ev->time};
    int present[10];
    size_t slot[10] = {0};
    for (int i = 0; i < 8; i++) present[i] = strs[i]->p != NULL;
    present[8] = ev->data.p != NULL;
    present[9] = ev->has_exts || ev->n_exts > 0;
    size_t tbl = fbb_table(b, 10, present, slot);
    for (int i = 0; i < 8; i++)
        if (present[i]) fbb_patch(b, slot[i], fbb_bytes(b, *strs[i], 1));
    if (present[8]) fbb_patch(b, slot[8], fbb_bytes(b, ev->data, 0));
    if (present[9]) {
        size_t vec = fbb_u32(b, ev->n_exts);
        size_t elems = fbb_put(b, NULL, 4 * (size_t)ev->n_exts);
        fbb_patch(b, slot[9], vec);
        for (uint32_t k = 0; k < ev->n_exts; k++) {
            const fb_ext *x = &ev->exts[k];
            int xp[2] = {x->name.p != NULL, x->value.p != NULL};
            size_t xs[2] = {0};
            size_t xt = fbb_table(b, 2, xp, xs);
            fbb_patch(b, elems + 4 * k, xt);
            for (int i = 0; i < 2; i++)
                if (xp[i]) fbb_patch(b, xs[i], fbb_bytes(b, i ? x->value : x->name, 1));
        }
    }
    return tbl;
}

static uint8_t *fbb_finish(fbb *b, size_t *len) {
    if (b->oom) {
        free(b->p);
        return NULL;
    }
    *len = b->len;
    return b->p;
}

uint8_t *fb_encode_event(const fb_event *ev, size_t *len) {
    fbb b = {0};
    size_t root = fbb_u32(&b, 0);
    fbb_patch(&b, root, fbb_event(&b, ev));
    return fbb_finish(&b, len);
}

uint8_t *fb_encode_response(const fb_response *r, size_t *len) {
    fbb b = {0};
    size_t root = fbb_u32(&b, 0);
    int present[2] = {r->has_event, r->error_message.p != NULL};
    size_t slot[2] = {0};
    size_t tbl = fbb_table(&b, 2, present, slot);
    fbb_patch(&b, root, tbl);
    if (present[0]) fbb_patch(&b, slot[0], fbb_event(&b, &r->event));
    if (present[1]) fbb_patch(&b, slot[1], fbb_bytes(&b, r->error_message, 1));
    return fbb_finish(&b, len);
}

fb_span fb_cstr(const char *s) {
    fb_span sp = {(const uint8_t *)s, s ? (uint32_t)strlen(s) : 0};
    return sp;
}

/* ---------------------------------------------------------------- reader --------------------
 * Every position is a uint64_t checked against the buffer length before any byte is read; all
 * multi-byte reads go through memcpy-free little-endian assembly, so unaligned buffers are fine. */

typedef struct {
    const uint8_t *buf;
    uint64_t len;
    char *err;
    size_t errlen;
} rd;

static int fail(rd *r, const char *fmt, ...) {
    if (r->err && r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int in_bounds(const rd *r, uint64_t pos, uint64_t n) { return pos <= r->len && n <= r->len - pos; }

/* Follow the uoffset stored at pos. */
static int deref(rd *r, uint64_t pos, uint64_t *target, const char *what) {
    if (!in_bounds(r, pos, 4)) return fail(r, "%s: offset at %llu out of bounds", what, (unsigned long long)pos);
    uint64_t t = pos + get32(r->buf + pos);
    if (!in_bounds(r, t, 4)) return fail(r, "%s: target %llu out of bounds", what, (unsigned long long)t);
    *target = t;
    return 0;
}

typedef struct {
    uint64_t tbl, vt;
    uint16_t vtsize, tblsize;
} tview;

static int table_at(rd *r, uint64_t tbl, tview *tv, const char *what) {
    if (!in_bounds(r, tbl, 4)) return fail(r, "%s: table out of bounds", what);
    int32_t so = (int32_t)get32(r->buf + tbl);
    int64_t vt = (int64_t)tbl - (int64_t)so;
    if (vt < 0 || !in_bounds(r, (uint64_t)vt, 4)) return fail(r, "%s: vtable out of bounds", what);
    uint16_t vtsize = get16(r->buf + vt), tblsize = get16(r->buf + vt + 2);
    if (vtsize < 4 || (vtsize & 1)) return fail(r, "%s: bad vtable size %u", what, vtsize);
    if (!in_bounds(r, (uint64_t)vt, vtsize)) return fail(r, "%s: vtable overruns buffer", what);
    if (tblsize < 4 || !in_bounds(r, tbl, tblsize)) return fail(r, "%s: table size %u overruns buffer", what, tblsize);
    tv->tbl = tbl;
    tv->vt = (uint64_t)vt;
    tv->vtsize = vtsize;
    tv->tblsize = tblsize;
    return 0;
}

/* Field i's offset inside the table, 0 when absent. Checks an offset field fits in the table. */
static int field(rd *r, const tview *tv, int i, uint16_t *fo, const char *what) {
    uint32_t slot = 4 + 2 * (uint32_t)i;
    *fo = 0;
    if (slot + 2 > tv->vtsize) return 0;
    uint16_t o = get16(r->buf + tv->vt + slot);
    if (o == 0) return 0;
    if (o < 4 || (uint32_t)o + 4 > tv->tblsize) return fail(r, "%s: field %d offset %u outside table", what, i, o);
    *fo = o;
    return 0;
}

/* A string (nul=1, must be NUL-terminated) or [ubyte] (nul=0) referenced by field i. */
static int span_field(rd *r, const tview *tv, int i, int nul, fb_span *out, const char *what) {
    uint16_t fo;
    out->p = NULL;
    out->len = 0;
    if (field(r, tv, i, &fo, what)) return -1;
    if (!fo) return 0;
    uint64_t at;
    if (deref(r, tv->tbl + fo, &at, what)) return -1;
    uint32_t n = get32(r->buf + at);
    if (!in_bounds(r, at + 4, (uint64_t)n + (nul ? 1 : 0)))
        return fail(r, "%s: field %d length %u overruns buffer", what, i, n);
    if (nul && r->buf[at + 4 + n] != 0) return fail(r, "%s: field %d string not NUL-terminated", what, i);
    out->p = r->buf + at + 4;
    out->len = n;
    return 0;
}

static int read_ext(rd *r, uint64_t tbl, fb_ext *x) {
    tview tv;
    if (table_at(r, tbl, &tv, "Extension")) return -1;
    if (span_field(r, &tv, 0, 1, &x->name, "Extension.name")) return -1;
    return span_field(r, &tv, 1, 1, &x->value, "Extension.value");
}

static int read_event_at(rd *r, uint64_t tbl, fb_event *ev) {
    memset(ev, 0, sizeof *ev);
    tview tv;
    if (table_at(r, tbl, &tv, "CloudEvent")) return -1;
    fb_span *strs[8] = {&ev->id, &ev->type, &ev->source, &ev->specversion,
                        &ev->datacontenttype, &ev->dataschema, &ev->subject, &ev->time};
    for (int i = 0; i < 8; i++)
        if (span_field(r, &tv, i, 1, strs[i], "CloudEvent")) return -1;
    if (span_field(r, &tv, 8, 0, &ev->data, "CloudEvent.data")) return -1;
    uint16_t fo;
    if (field(r, &tv, 9, &fo, "CloudEvent.extensions")) return -1;
    if (!fo) return 0;
    uint64_t vec;
    if (deref(r, tv.tbl + fo, &vec, "CloudEvent.extensions")) return -1;
    uint32_t n = get32(r->buf + vec);
    if (!in_bounds(r, vec + 4, (uint64_t)n * 4)) return fail(r, "CloudEvent.extensions: %u entries overrun buffer", n);
    ev->has_exts = 1;
    if (n == 0) return 0;
    ev->exts = calloc(n, sizeof *ev->exts);
    if (!ev->exts) return fail(r, "out of memory");
    ev->n_exts = n;
    for (uint32_t k = 0; k < n; k++) {
        uint64_t xt;
        if (deref(r, vec + 4 + 4 * (uint64_t)k, &xt, "Extension") || read_ext(r, xt, &ev->exts[k])) {
            fb_event_free(ev);
            return -1;
        }
    }
    return 0;
}

int fb_read_event(const uint8_t *buf, size_t len, fb_event *out, char *err, size_t errlen) {
    rd r = {buf, len, err, errlen};
    memset(out, 0, sizeof *out);
    uint64_t tbl;
    if (!buf) return fail(&r, "NULL buffer");
    if (deref(&r, 0, &tbl, "root")) return -1;
    return read_event_at(&r, tbl, out);
}

int fb_read_response(const uint8_t *buf, size_t len, fb_response *out, char *err, size_t errlen) {
    rd r = {buf, len, err, errlen};
    memset(out, 0, sizeof *out);
    uint64_t tbl;
    tview tv;
    uint16_t fo;
    if (!buf) return fail(&r, "NULL buffer");
    if (deref(&r, 0, &tbl, "root") || table_at(&r, tbl, &tv, "WorkerResponse")) return -1;
    if (span_field(&r, &tv, 1, 1, &out->error_message, "WorkerResponse.error_message")) return -1;
    if (field(&r, &tv, 0, &fo, "WorkerResponse.result_event")) return -1;
    if (!fo) return 0;
    uint64_t et;
    if (deref(&r, tv.tbl + fo, &et, "WorkerResponse.result_event") || read_event_at(&r, et, &out->event)) return -1;
    out->has_event = 1;
    return 0;
}

void fb_event_free(fb_event *ev) {
    free(ev->exts);
    ev->exts = NULL;
    ev->n_exts = 0;
}

void fb_response_free(fb_response *r) { fb_event_free(&r->event); }

/* ---------------------------------------------------------------- self test ----------------- */

static int st_failures;
#define CHECK(cond, ...)                                     \
    do {                                                     \
        if (!(cond)) {                                       \
            fprintf(stderr, "fb self-test %d: ", __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                    \
            fputc('\n', stderr);                             \
            st_failures++;                                   \
        }                                                    \
    } while (0)

static int span_eq(fb_span a, const char *s) {
    if (!s) return a.p == NULL;
    return a.p && a.len == strlen(s) && memcmp(a.p, s, a.len) == 0;
}

static void check_bytes(const uint8_t *got, size_t glen, const uint8_t *want, size_t wlen, const char *name) {
    int same = glen == wlen && memcmp(got, want, wlen) == 0;
    CHECK(same, "%s: bytes differ (got %zu bytes, want %zu)", name, glen, wlen);
    if (!same) {
        for (size_t i = 0; i < glen; i++) fprintf(stderr, "%02x%s", got[i], (i % 4 == 3) ? " " : "");
        fputc('\n', stderr);
    }
}

int fb_self_test(void) {
    st_failures = 0;
    char err[200];
    size_t len;

    /* 1. All fields absent: root → table at 8, 4-byte vtable at 4. */
    {
        fb_event ev = {0};
        uint8_t *b = fb_encode_event(&ev, &len);
        static const uint8_t want[] = {8, 0, 0, 0, 4, 0, 4, 0, 4, 0, 0, 0};
        check_bytes(b, len, want, sizeof want, "empty event");
        fb_event rd_ev;
        CHECK(fb_read_event(b, len, &rd_ev, err, sizeof err) == 0, "empty event unreadable: %s", err);
        CHECK(rd_ev.id.p == NULL && rd_ev.data.p == NULL && !rd_ev.has_exts, "empty event has fields");
        fb_event_free(&rd_ev);
        free(b);
    }
    /* 2. Only id="a": exact bytes, vtable trimmed to slot 0, string 4-aligned and NUL-terminated. */
    {
        fb_event ev = {0};
        ev.id = fb_cstr("a");
        uint8_t *b = fb_encode_event(&ev, &len);
        static const uint8_t want[] = {12, 0, 0, 0, 6, 0, 8, 0, 4, 0, 0, 0, 8, 0, 0, 0,
                                       4,  0, 0, 0, 1, 0, 0, 0, 'a', 0};
        check_bytes(b, len, want, sizeof want, "id-only event");
        free(b);
    }
    /* 3. Only data = {} (present, empty vector) and an empty extensions vector. */
    {
        fb_event ev = {0};
        ev.data.p = (const uint8_t *)"";
        ev.data.len = 0;
        ev.has_exts = 1;
        uint8_t *b = fb_encode_event(&ev, &len);
        /* vtable at 4: size 4+2*10=24, table 12; slots 8 and 9 at 4 and 8. table at 28. */
        static const uint8_t want[] = {28, 0, 0, 0, 24, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                       0,  0, 0, 0, 4,  0, 8,  0, 24, 0, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0,
                                       0,  0, 0, 0, 0,  0, 0,  0};
        check_bytes(b, len, want, sizeof want, "empty vectors");
        fb_event r2;
        CHECK(fb_read_event(b, len, &r2, err, sizeof err) == 0, "empty vectors unreadable: %s", err);
        CHECK(r2.data.p != NULL && r2.data.len == 0, "empty data vector not present-and-empty");
        CHECK(r2.has_exts && r2.n_exts == 0, "empty extensions vector not present-and-empty");
        CHECK(r2.id.p == NULL && r2.time.p == NULL, "absent strings read as present");
        fb_event_free(&r2);
        free(b);
    }
    /* 4. Every field, extensions, empty strings; round trip, also from an unaligned copy. */
    {
        fb_ext exts[3] = {{fb_cstr("correlationid"), fb_cstr("c-42")},
                          {fb_cstr("empty"), fb_cstr("")},
                          {fb_cstr("novalue"), {NULL, 0}}};
        fb_event ev = {0};
        ev.id = fb_cstr("id-1");
        ev.type = fb_cstr("command.websocketmanagercontroller");
        ev.source = fb_cstr("urn:test");
        ev.specversion = fb_cstr("1.0");
        ev.datacontenttype = fb_cstr("application/json");
        ev.dataschema = fb_cstr("");
        ev.subject = fb_cstr("subj");
        ev.time = fb_cstr("2026-01-01T00:00:00Z");
        ev.data = fb_cstr("{\"command\":\"list\"}\x01\xff");
        ev.exts = exts;
        ev.n_exts = 3;
        uint8_t *b = fb_encode_event(&ev, &len);
        CHECK(b != NULL, "encode failed");
        for (int shift = 0; shift < 4; shift++) {
            uint8_t *raw = malloc(len + 4);
            memcpy(raw + shift, b, len);
            fb_event r2;
            int rc = fb_read_event(raw + shift, len, &r2, err, sizeof err);
            CHECK(rc == 0, "full event (shift %d) unreadable: %s", shift, err);
            if (rc == 0) {
                CHECK(span_eq(r2.id, "id-1") && span_eq(r2.type, "command.websocketmanagercontroller") &&
                          span_eq(r2.source, "urn:test") && span_eq(r2.specversion, "1.0") &&
                          span_eq(r2.datacontenttype, "application/json") && span_eq(r2.dataschema, "") &&
                          span_eq(r2.subject, "subj") && span_eq(r2.time, "2026-01-01T00:00:00Z"),
                      "string fields differ (shift %d)", shift);
                CHECK(r2.data.len == ev.data.len && memcmp(r2.data.p, ev.data.p, ev.data.len) == 0, "data differs");
                CHECK(r2.n_exts == 3 && span_eq(r2.exts[0].name, "correlationid") &&
                          span_eq(r2.exts[0].value, "c-42") && span_eq(r2.exts[1].value, "") &&
                          span_eq(r2.exts[2].name, "novalue") && r2.exts[2].value.p == NULL,
                      "extensions differ");
                fb_event_free(&r2);
            }
            free(raw);
        }
        /* Alignment of every string/vector length prefix relative to the buffer start. */
        fb_event r3;
        if (fb_read_event(b, len, &r3, err, sizeof err) == 0) {
            CHECK((size_t)(r3.id.p - b) % 4 == 0 && (size_t)(r3.data.p - b) % 4 == 0 &&
                      (size_t)(r3.exts[1].name.p - b) % 4 == 0,
                  "string/vector bodies not 4-aligned after their length");
            fb_event_free(&r3);
        }
        /* Every strict prefix is rejected (the last bytes are a string and its NUL). */
        for (size_t cut = 0; cut < len; cut++) {
            fb_event r4;
            int rc = fb_read_event(b, cut, &r4, err, sizeof err);
            CHECK(rc != 0, "truncated to %zu of %zu bytes but accepted", cut, len);
            if (rc == 0) fb_event_free(&r4);
        }
        /* Every single bit flip: read must not crash (valgrind checks no out-of-bounds access). */
        for (size_t i = 0; i < len * 8; i++) {
            uint8_t *m = malloc(len);
            memcpy(m, b, len);
            m[i / 8] ^= (uint8_t)(1u << (i % 8));
            fb_event r5;
            if (fb_read_event(m, len, &r5, err, sizeof err) == 0) fb_event_free(&r5);
            free(m);
        }
        /* Oversized offsets and lengths are errors. */
        {
            uint8_t *m = malloc(len);
            memcpy(m, b, len);
            m[0] = 0xf0, m[1] = 0xff, m[2] = 0xff, m[3] = 0xff;
            fb_event r6;
            CHECK(fb_read_event(m, len, &r6, err, sizeof err) != 0, "root offset 0xfffffff0 accepted");
            free(m);
        }
        /* WorkerResponse round trip wrapping this event, with and without error_message. */
        fb_response resp = {0};
        resp.has_event = 1;
        resp.event = ev;
        resp.error_message = fb_cstr("boom");
        size_t rlen;
        uint8_t *rb = fb_encode_response(&resp, &rlen);
        fb_response rr;
        CHECK(fb_read_response(rb, rlen, &rr, err, sizeof err) == 0, "response unreadable: %s", err);
        CHECK(rr.has_event && span_eq(rr.event.subject, "subj") && span_eq(rr.error_message, "boom") &&
                  rr.event.n_exts == 3,
              "response fields differ");
        fb_response_free(&rr);
        for (size_t cut = 0; cut < rlen; cut++) {
            fb_response r7;
            int rc = fb_read_response(rb, cut, &r7, err, sizeof err);
            CHECK(rc != 0, "response truncated to %zu accepted", cut);
            if (rc == 0) fb_response_free(&r7);
        }
        for (size_t i = 0; i < rlen * 8; i++) {
            uint8_t *m = malloc(rlen);
            memcpy(m, rb, rlen);
            m[i / 8] ^= (uint8_t)(1u << (i % 8));
            fb_response r8;
            if (fb_read_response(m, rlen, &r8, err, sizeof err) == 0) fb_response_free(&r8);
            free(m);
        }
        free(rb);
        /* Empty WorkerResponse: no result_event. */
        fb_response none = {0};
        rb = fb_encode_response(&none, &rlen);
        static const uint8_t want[] = {8, 0, 0, 0, 4, 0, 4, 0, 4, 0, 0, 0};
        check_bytes(rb, rlen, want, sizeof want, "empty response");
        CHECK(fb_read_response(rb, rlen, &rr, err, sizeof err) == 0 && !rr.has_event && rr.error_message.p == NULL,
              "empty response misread");
        fb_response_free(&rr);
        free(rb);
        free(b);
    }
    /* 5. Garbage inputs. */
    {
        fb_event r9;
        CHECK(fb_read_event(NULL, 0, &r9, err, sizeof err) != 0, "NULL accepted");
        static const uint8_t tiny[3] = {0, 0, 0};
        CHECK(fb_read_event(tiny, sizeof tiny, &r9, err, sizeof err) != 0, "3 bytes accepted");
        static const uint8_t selfref[8] = {4, 0, 0, 0, 0, 0, 0, 0}; /* soffset 0: vtable = table */
        CHECK(fb_read_event(selfref, sizeof selfref, &r9, err, sizeof err) != 0, "vtable size 0 accepted");
    }
    return st_failures;
}
