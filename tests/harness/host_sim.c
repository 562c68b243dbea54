/* host_sim: a WorkManager NativeDllEngine host simulator for native worker plugins (ABI v1).
 * See README.md. No Rust on this side: dlopen + the C ABI of include/controller.h, and its own
 * FlatBuffers code (fb.c). */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fb.h"
#include "gateway.h"

/* The ABI of include/controller.h, restated so the harness builds without the repository. */
typedef struct VirtufinHost {
    void *engine_ptr;
    int32_t abi_version;
    void (*log)(void *ctx, int32_t level, const char *msg);
    int32_t (*gateway_call)(void *ctx, const char *service, const char *method, const uint8_t *req,
                            int32_t req_len, uint8_t **resp, int32_t *resp_len);
    void (*free_response)(void *ctx, uint8_t *resp);
} VirtufinHost;

typedef int32_t (*process_fn)(const VirtufinHost *, const uint8_t *, int32_t, uint8_t **, int32_t *);
typedef void (*free_fn)(uint8_t *);

/* ------------------------------------------------------------------------- host state ------ */

typedef struct {
    gateway *gw;
    atomic_long gw_calls, gw_allocated, gw_freed, logs;
} engine;

static engine g_engine;
static pthread_mutex_t g_out_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_log_level = 0;

static void host_log(void *ctx, int32_t level, const char *msg) {
    static const char *names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};
    engine *e = ctx;
    atomic_fetch_add(&e->logs, 1);
    if (level < g_log_level) return;
    const char *name = (level >= 0 && level <= 4) ? names[level] : "LEVEL?";
    fprintf(stderr, "[%s] %s\n", name, msg ? msg : "(null)");
}

static int32_t host_gateway_call(void *ctx, const char *service, const char *method, const uint8_t *req,
                                 int32_t req_len, uint8_t **resp, int32_t *resp_len) {
    engine *e = ctx;
    atomic_fetch_add(&e->gw_calls, 1);
    if (!resp || !resp_len) return 3;
    *resp = NULL;
    *resp_len = 0;
    int32_t rc;
    if (!e->gw) {
        const char *msg = "host_sim: no gateway configured (use --gateway)";
        *resp = (uint8_t *)strdup(msg);
        *resp_len = *resp ? (int32_t)strlen(msg) : 0;
        rc = 14;
    } else {
        rc = gateway_invoke(e->gw, service ? service : "", method ? method : "", req, req_len, resp, resp_len);
    }
    if (*resp) atomic_fetch_add(&e->gw_allocated, 1);
    return rc;
}

static void host_free_response(void *ctx, uint8_t *resp) {
    engine *e = ctx;
    if (resp) atomic_fetch_add(&e->gw_freed, 1);
    free(resp);
}

/* ------------------------------------------------------------------------- commands -------- */

#define MAX_EXTS 16

typedef struct {
    char *text;  /* owned copy of the input line; spans point into it */
    fb_event ev; /* exts points at ext_store */
    fb_ext ext_store[MAX_EXTS];
    const char *correlationid; /* expected echo, NUL-terminated (inside text) */
    const char *subject;
    uint8_t *buf; /* encoded CloudEvent */
    size_t len;
} command;

static char g_time[40];

/* Parses "[@key=value ...] DATA". Keys: id type source specversion datacontenttype dataschema
 * subject time correlationid ext.NAME; "@noext" sends an empty extensions vector, "@nodata" no data. */
static int parse_command(const char *line, size_t index, command *c) {
    memset(c, 0, sizeof *c);
    c->text = strdup(line);
    if (!c->text) return -1;
    char *p = c->text;
    fb_event *ev = &c->ev;
    ev->exts = c->ext_store;
    int nodata = 0;
    while (*p == ' ' || *p == '\t') p++;
    while (*p == '@') {
        char *tok = p + 1;
        while (*p && *p != ' ' && *p != '\t') p++;
        if (*p) *p++ = 0;
        while (*p == ' ' || *p == '\t') p++;
        char *eq = strchr(tok, '=');
        if (!eq) {
            if (strcmp(tok, "noext") == 0) {
                ev->has_exts = 1;
                continue;
            }
            if (strcmp(tok, "nodata") == 0) {
                nodata = 1;
                continue;
            }
            fprintf(stderr, "host_sim: command %zu: bad prefix @%s (want @key=value)\n", index + 1, tok);
            return -1;
        }
        *eq = 0;
        fb_span v = fb_cstr(eq + 1);
        if (!strcmp(tok, "id")) ev->id = v;
        else if (!strcmp(tok, "type")) ev->type = v;
        else if (!strcmp(tok, "source")) ev->source = v;
        else if (!strcmp(tok, "specversion")) ev->specversion = v;
        else if (!strcmp(tok, "datacontenttype")) ev->datacontenttype = v;
        else if (!strcmp(tok, "dataschema")) ev->dataschema = v;
        else if (!strcmp(tok, "time")) ev->time = v;
        else if (!strcmp(tok, "subject")) {
            ev->subject = v;
            c->subject = eq + 1;
        } else if (!strcmp(tok, "correlationid") || !strncmp(tok, "ext.", 4)) {
            if (ev->n_exts == MAX_EXTS) {
                fprintf(stderr, "host_sim: command %zu: more than %d extensions\n", index + 1, MAX_EXTS);
                return -1;
            }
            const char *name = tok[0] == 'c' ? tok : tok + 4;
            if (!strcmp(name, "correlationid")) c->correlationid = eq + 1;
            c->ext_store[ev->n_exts].name = fb_cstr(name);
            c->ext_store[ev->n_exts].value = v;
            ev->n_exts++;
        } else {
            fprintf(stderr, "host_sim: command %zu: unknown prefix key @%s\n", index + 1, tok);
            return -1;
        }
    }
    if (!nodata) ev->data = fb_cstr(p);
    static const char *dflt_type = "command.websocketmanagercontroller";
    if (!ev->id.p) {
        /* "host-sim-<index>"; stored after the text so it lives as long as the command. */
        char idbuf[40];
        snprintf(idbuf, sizeof idbuf, "host-sim-%zu", index + 1);
        size_t tl = strlen(line) + 1;
        char *grown = realloc(c->text, tl + strlen(idbuf) + 1);
        if (!grown) return -1;
        if (grown != c->text) { /* re-base every span into the moved text */
            ptrdiff_t d = grown - c->text;
            fb_span *all[] = {&ev->id, &ev->type, &ev->source, &ev->specversion, &ev->datacontenttype,
                              &ev->dataschema, &ev->subject, &ev->time, &ev->data};
            for (size_t i = 0; i < sizeof all / sizeof *all; i++)
                if (all[i]->p) all[i]->p += d;
            for (uint32_t i = 0; i < ev->n_exts; i++) {
                ev->exts[i].name.p += d;
                ev->exts[i].value.p += d;
            }
            if (c->correlationid) c->correlationid += d;
            if (c->subject) c->subject += d;
            c->text = grown;
        }
        strcpy(c->text + tl, idbuf);
        ev->id = fb_cstr(c->text + tl);
    }
    if (!ev->type.p) ev->type = fb_cstr(dflt_type);
    if (!ev->source.p) ev->source = fb_cstr("urn:virtufin:host-sim");
    if (!ev->specversion.p) ev->specversion = fb_cstr("1.0");
    if (!ev->datacontenttype.p) ev->datacontenttype = fb_cstr("application/json");
    if (!ev->time.p) ev->time = fb_cstr(g_time);
    c->buf = fb_encode_event(ev, &c->len);
    return c->buf ? 0 : -1;
}

static void free_command(command *c) {
    free(c->text);
    free(c->buf);
}

/* ------------------------------------------------------------------------- running --------- */

typedef struct {
    process_fn process;
    free_fn free_result;
    command *cmds;
    size_t n_cmds;
    long repeat;
    int abi, quiet, bench, shared_host, verbose;
    const char *expect;
    atomic_long calls, ok, bad, results_freed;
} run_cfg;

typedef struct {
    run_cfg *cfg;
    VirtufinHost *host;
    double *lat; /* seconds per Process call (bench) */
    size_t n_lat;
} worker;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int span_is(fb_span s, const char *want) {
    return s.p && want && s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

static int contains(fb_span s, const char *needle) {
    size_t n = strlen(needle);
    if (n > s.len) return 0;
    for (size_t i = 0; i + n <= s.len; i++)
        if (memcmp(s.p + i, needle, n) == 0) return 1;
    return 0;
}

/* Checks one reply; prints its data. Returns 0 when good. */
static int check_reply(run_cfg *cfg, const command *c, int32_t rc, const uint8_t *out, int32_t out_len) {
    char err[256];
    if (rc != 0) {
        fprintf(stderr, "host_sim: %s: Process returned %d\n", c->text, rc);
        return -1;
    }
    if (!out || out_len <= 0) {
        fprintf(stderr, "host_sim: %s: Process returned 0 without a reply buffer\n", c->text);
        return -1;
    }
    fb_response r;
    if (fb_read_response(out, (size_t)out_len, &r, err, sizeof err)) {
        fprintf(stderr, "host_sim: %s: unreadable WorkerResponse: %s\n", c->text, err);
        return -1;
    }
    int bad = 0;
    if (!r.has_event) {
        fprintf(stderr, "host_sim: %s: WorkerResponse without result_event\n", c->text);
        bad = 1;
    } else if (!r.event.data.p) {
        fprintf(stderr, "host_sim: %s: result_event without data\n", c->text);
        bad = 1;
    } else {
        const fb_event *e = &r.event;
        if (!e->id.p || !e->id.len || !e->type.p || !e->type.len || !e->source.p || !span_is(e->specversion, "1.0")) {
            fprintf(stderr, "host_sim: %s: reply lacks id/type/source/specversion 1.0\n", c->text);
            bad = 1;
        }
        if (c->subject && !span_is(e->subject, c->subject)) {
            fprintf(stderr, "host_sim: %s: reply subject not echoed\n", c->text);
            bad = 1;
        }
        if (c->correlationid) {
            int found = 0;
            for (uint32_t i = 0; i < e->n_exts; i++)
                if (span_is(e->exts[i].name, "correlationid") && span_is(e->exts[i].value, c->correlationid)) found = 1;
            if (!found) {
                fprintf(stderr, "host_sim: %s: reply lacks correlationid %s\n", c->text, c->correlationid);
                bad = 1;
            }
        }
        if (cfg->expect && !contains(e->data, cfg->expect)) {
            fprintf(stderr, "host_sim: %s: reply does not contain %s: %.*s\n", c->text, cfg->expect,
                    (int)e->data.len, (const char *)e->data.p);
            bad = 1;
        }
        if (cfg->verbose) {
            pthread_mutex_lock(&g_out_lock);
            fprintf(stderr, "reply id=%.*s type=%.*s source=%.*s subject=%.*s time=%.*s exts=%u\n", (int)e->id.len,
                    (const char *)e->id.p, (int)e->type.len, (const char *)e->type.p, (int)e->source.len,
                    (const char *)e->source.p, (int)e->subject.len, e->subject.p ? (const char *)e->subject.p : "",
                    (int)e->time.len, e->time.p ? (const char *)e->time.p : "", e->n_exts);
            for (uint32_t i = 0; i < e->n_exts; i++)
                fprintf(stderr, "  ext %.*s=%.*s\n", (int)e->exts[i].name.len, (const char *)e->exts[i].name.p,
                        (int)e->exts[i].value.len, e->exts[i].value.p ? (const char *)e->exts[i].value.p : "");
            pthread_mutex_unlock(&g_out_lock);
        }
        if (!cfg->quiet && !cfg->bench) {
            pthread_mutex_lock(&g_out_lock);
            fwrite(e->data.p, 1, e->data.len, stdout);
            fputc('\n', stdout);
            pthread_mutex_unlock(&g_out_lock);
        }
    }
    if (r.error_message.p)
        fprintf(stderr, "host_sim: %s: error_message: %.*s\n", c->text, (int)r.error_message.len,
                (const char *)r.error_message.p);
    fb_response_free(&r);
    return bad ? -1 : 0;
}

static void *run_worker(void *arg) {
    worker *w = arg;
    run_cfg *cfg = w->cfg;
    for (long rep = 0; rep < cfg->repeat; rep++) {
        for (size_t i = 0; i < cfg->n_cmds; i++) {
            command *c = &cfg->cmds[i];
            uint8_t *out = NULL;
            int32_t out_len = -1;
            double t0 = cfg->bench ? now_s() : 0;
            int32_t rc = cfg->process(w->host, c->buf, (int32_t)c->len, &out, &out_len);
            if (cfg->bench) w->lat[w->n_lat++] = now_s() - t0;
            atomic_fetch_add(&cfg->calls, 1);
            if (check_reply(cfg, c, rc, out, out_len) == 0)
                atomic_fetch_add(&cfg->ok, 1);
            else
                atomic_fetch_add(&cfg->bad, 1);
            if (out) {
                cfg->free_result(out);
                atomic_fetch_add(&cfg->results_freed, 1);
            }
        }
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------------------------- plugin corpus --- */

static int g_corpus_fail;
#define EXPECT(cond, ...)                                      \
    do {                                                       \
        if (!(cond)) {                                         \
            fprintf(stderr, "plugin self-test: " __VA_ARGS__); \
            fputc('\n', stderr);                               \
            g_corpus_fail++;                                   \
        }                                                      \
    } while (0)

/* Process must return 0 and a readable WorkerResponse with a result_event for any input. */
static void expect_reply(run_cfg *cfg, VirtufinHost *host, const uint8_t *in, int32_t len, const char *what) {
    uint8_t *out = (uint8_t *)&out; /* garbage, must be overwritten */
    int32_t out_len = -1;
    int32_t rc = cfg->process(host, in, len, &out, &out_len);
    char err[256] = "";
    EXPECT(rc == 0 && out && out_len > 0, "%s: rc %d, out_len %d", what, rc, out_len);
    if (rc != 0 || !out || out_len <= 0) return;
    fb_response r;
    int rd = fb_read_response(out, (size_t)out_len, &r, err, sizeof err);
    EXPECT(rd == 0 && r.has_event && r.event.data.p, "%s: bad reply: %s", what, err);
    if (rd == 0) fb_response_free(&r);
    cfg->free_result(out);
}

static int plugin_corpus(run_cfg *cfg, VirtufinHost *host) {
    fb_event ev = {0};
    fb_ext x = {fb_cstr("correlationid"), fb_cstr("corpus")};
    ev.id = fb_cstr("corpus-1");
    ev.type = fb_cstr("command.websocketmanagercontroller");
    ev.source = fb_cstr("urn:virtufin:host-sim");
    ev.specversion = fb_cstr("1.0");
    ev.subject = fb_cstr("s");
    ev.data = fb_cstr("{\"command\":\"get_tag\",\"id\":\"c1\",\"key\":\"k\"}");
    ev.exts = &x;
    ev.n_exts = 1;
    size_t len;
    uint8_t *b = fb_encode_event(&ev, &len);
    char what[80];
    /* unaligned copies */
    for (int shift = 0; shift < 8; shift++) {
        uint8_t *raw = malloc(len + 8);
        memcpy(raw + shift, b, len);
        snprintf(what, sizeof what, "unaligned copy +%d", shift);
        expect_reply(cfg, host, raw + shift, (int32_t)len, what);
        free(raw);
    }
    /* truncated: every prefix, each in its own exact-size allocation so valgrind sees overreads */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *m = malloc(cut ? cut : 1);
        memcpy(m, b, cut);
        snprintf(what, sizeof what, "truncated to %zu", cut);
        expect_reply(cfg, host, m, (int32_t)cut, what);
        free(m);
    }
    /* bit-flipped: every bit */
    for (size_t i = 0; i < len * 8; i++) {
        uint8_t *m = malloc(len);
        memcpy(m, b, len);
        m[i / 8] ^= (uint8_t)(1u << (i % 8));
        snprintf(what, sizeof what, "bit %zu flipped", i);
        expect_reply(cfg, host, m, (int32_t)len, what);
        free(m);
    }
    /* oversized: the event followed by 1 MiB of 0xff, and the length field claims more */
    {
        size_t big = len + (1u << 20);
        uint8_t *m = malloc(big);
        memcpy(m, b, len);
        memset(m + len, 0xff, big - len);
        expect_reply(cfg, host, m, (int32_t)big, "event + 1 MiB trailing garbage");
        m[0] = m[1] = m[2] = 0xff;
        m[3] = 0x7f;
        expect_reply(cfg, host, m, (int32_t)big, "root offset 0x7fffffff");
        free(m);
    }
    /* random garbage of various sizes */
    unsigned seed = 12345;
    for (int k = 0; k < 200; k++) {
        size_t n = (size_t)(k * 7 % 300) + 1;
        uint8_t *m = malloc(n);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            m[i] = (uint8_t)(seed >> 16);
        }
        snprintf(what, sizeof what, "random %zu bytes #%d", n, k);
        expect_reply(cfg, host, m, (int32_t)n, what);
        free(m);
    }
    expect_reply(cfg, host, NULL, 0, "NULL input");
    expect_reply(cfg, host, b, 0, "zero length");
    expect_reply(cfg, host, b, -5, "negative length");
    /* NULL out-pointers and host: a non-zero status and nothing to free */
    {
        int32_t out_len = 7;
        int32_t rc = cfg->process(host, b, (int32_t)len, NULL, &out_len);
        EXPECT(rc != 0, "NULL out_buf: rc %d", rc);
        uint8_t *out = (uint8_t *)&out;
        rc = cfg->process(host, b, (int32_t)len, &out, NULL);
        EXPECT(rc != 0 && out == NULL, "NULL out_len: rc %d, out %p", rc, (void *)out);
        out = (uint8_t *)&out;
        out_len = 7;
        rc = cfg->process(NULL, b, (int32_t)len, &out, &out_len);
        EXPECT(rc != 0 && out == NULL && out_len == 0, "NULL host: rc %d, out_len %d", rc, out_len);
        cfg->free_result(NULL);
    }
    free(b);
    return g_corpus_fail;
}

/* ------------------------------------------------------------------------- main ------------ */

static void usage(void) {
    fprintf(stderr,
            "usage: host_sim --lib PATH [--gateway script:FILE | --gateway http://HOST:PORT] [--record FILE]\n"
            "                [--threads N] [--repeat N] [--bench] [--abi N] [--entry NAME] [--free NAME]\n"
            "                [--expect TEXT] [--quiet] [--verbose] [--shared-host] [--keep-loaded] [--log-level N]\n"
            "                (--events FILE [--stream] | COMMAND...)\n"
            "       host_sim --self-test [--lib PATH]\n"
            "See tests/harness/README.md.\n");
}

static int add_command(command **cmds, size_t *n, size_t *cap, const char *line) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        command *nb = realloc(*cmds, nc * sizeof *nb);
        if (!nb) return -1;
        *cmds = nb;
        *cap = nc;
    }
    if (parse_command(line, *n, &(*cmds)[*n])) {
        free_command(&(*cmds)[*n]);
        return -1;
    }
    (*n)++;
    return 0;
}

int main(int argc, char **argv) {
    const char *lib = NULL, *gw_spec = NULL, *record = NULL, *events = NULL;
    const char *entry = "Process", *free_name = "FreeResult";
    long threads = 1;
    int self_test = 0, status = 0, log_level_set = 0, keep_loaded = 0, stream = 0;
    run_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.repeat = 1;
    cfg.abi = 1;
    command *cmds = NULL;
    size_t n_cmds = 0, cap_cmds = 0, n_streamed = 0;
    int first_cmd = argc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
#define VAL() (has_val ? argv[++i] : (usage(), exit(2), (char *)NULL))
        if (!strcmp(a, "--lib")) lib = VAL();
        else if (!strcmp(a, "--gateway")) gw_spec = VAL();
        else if (!strcmp(a, "--record")) record = VAL();
        else if (!strcmp(a, "--events")) events = VAL();
        else if (!strcmp(a, "--entry")) entry = VAL();
        else if (!strcmp(a, "--free")) free_name = VAL();
        else if (!strcmp(a, "--expect")) cfg.expect = VAL();
        else if (!strcmp(a, "--threads")) threads = strtol(VAL(), NULL, 10);
        else if (!strcmp(a, "--repeat")) cfg.repeat = strtol(VAL(), NULL, 10);
        else if (!strcmp(a, "--abi")) cfg.abi = (int)strtol(VAL(), NULL, 10);
        else if (!strcmp(a, "--log-level")) {
            g_log_level = (int)strtol(VAL(), NULL, 10);
            log_level_set = 1;
        }
        else if (!strcmp(a, "--bench")) cfg.bench = 1;
        else if (!strcmp(a, "--quiet")) cfg.quiet = 1;
        else if (!strcmp(a, "--verbose")) cfg.verbose = 1;
        else if (!strcmp(a, "--shared-host")) cfg.shared_host = 1;
        else if (!strcmp(a, "--keep-loaded")) keep_loaded = 1;
        else if (!strcmp(a, "--stream")) stream = 1;
        else if (!strcmp(a, "--self-test")) self_test = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        } else if (!strcmp(a, "--")) {
            first_cmd = i + 1;
            break;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "host_sim: unknown option %s\n", a);
            usage();
            return 2;
        } else {
            first_cmd = i;
            break;
        }
#undef VAL
    }
    if (threads < 1 || cfg.repeat < 1) {
        fprintf(stderr, "host_sim: --threads and --repeat must be >= 1\n");
        return 2;
    }
    if (stream && (!events || threads != 1 || cfg.repeat != 1 || cfg.bench || first_cmd < argc)) {
        fprintf(stderr, "host_sim: --stream needs --events and no --threads, --repeat, --bench or COMMAND\n");
        return 2;
    }

    if (self_test) {
        if (!log_level_set) g_log_level = 5; /* the corpus makes thousands of expected warnings */
        int f = fb_self_test();
        fprintf(stderr, "host_sim: FlatBuffers self-test: %d failure(s)\n", f);
        if (f) status = 1;
        if (!lib) return status;
    } else if (!lib) {
        usage();
        return 2;
    }

    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "host_sim: dlopen %s: %s\n", lib, dlerror());
        return 1;
    }
    cfg.process = (process_fn)(uintptr_t)dlsym(h, entry);
    cfg.free_result = (free_fn)(uintptr_t)dlsym(h, free_name);
    if (!cfg.process || !cfg.free_result) {
        fprintf(stderr, "host_sim: %s lacks %s or %s\n", lib, entry, free_name);
        dlclose(h);
        return 1;
    }
    if (gw_spec) {
        g_engine.gw = gateway_open(gw_spec, record);
        if (!g_engine.gw) {
            dlclose(h);
            return 2;
        }
    }

    VirtufinHost *hosts = calloc((size_t)threads, sizeof *hosts);
    for (long t = 0; t < threads; t++) {
        hosts[t].engine_ptr = &g_engine;
        hosts[t].abi_version = cfg.abi;
        hosts[t].log = host_log;
        hosts[t].gateway_call = host_gateway_call;
        hosts[t].free_response = host_free_response;
    }

    if (self_test) {
        int f = plugin_corpus(&cfg, &hosts[0]);
        fprintf(stderr, "host_sim: plugin bad-input corpus: %d failure(s)\n", f);
        if (f) status = 1;
        goto done;
    }

    {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(g_time, sizeof g_time, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    if (events) {
        FILE *f = strcmp(events, "-") ? fopen(events, "r") : stdin;
        if (!f) {
            fprintf(stderr, "host_sim: cannot open %s: %s\n", events, strerror(errno));
            status = 2;
            goto done;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, f)) >= 0) {
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
            const char *p = line;
            while (*p == ' ' || *p == '\t') p++;
            if (!*p || *p == '#') continue;
            if (stream) {
                /* One event at a time, as a host delivers them: run it, flush its reply, then read
                 * the next line (which may depend on this reply, e.g. a connection id). */
                command one;
                if (parse_command(p, n_streamed++, &one)) {
                    free_command(&one);
                    status = 2;
                    break;
                }
                worker w = {.cfg = &cfg, .host = &hosts[0]};
                cfg.cmds = &one;
                cfg.n_cmds = 1;
                run_worker(&w);
                cfg.cmds = NULL;
                cfg.n_cmds = 0;
                free_command(&one);
                fflush(stdout);
                continue;
            }
            if (add_command(&cmds, &n_cmds, &cap_cmds, p)) {
                status = 2;
                break;
            }
        }
        free(line);
        if (f != stdin) fclose(f);
    }
    for (int i = first_cmd; i < argc && status == 0; i++)
        if (add_command(&cmds, &n_cmds, &cap_cmds, argv[i])) status = 2;
    if (status) goto done;
    if (stream) goto summary;
    if (n_cmds == 0) {
        fprintf(stderr, "host_sim: no commands (give COMMAND_JSON arguments or --events FILE)\n");
        status = 2;
        goto done;
    }

    cfg.cmds = cmds;
    cfg.n_cmds = n_cmds;
    {
        worker *ws = calloc((size_t)threads, sizeof *ws);
        pthread_t *tids = calloc((size_t)threads, sizeof *tids);
        size_t per = (size_t)cfg.repeat * n_cmds;
        for (long t = 0; t < threads; t++) {
            ws[t].cfg = &cfg;
            ws[t].host = cfg.shared_host ? &hosts[0] : &hosts[t];
            if (cfg.bench) ws[t].lat = malloc(per * sizeof(double));
        }
        double t0 = now_s();
        if (threads == 1) {
            run_worker(&ws[0]);
        } else {
            for (long t = 0; t < threads; t++) pthread_create(&tids[t], NULL, run_worker, &ws[t]);
            for (long t = 0; t < threads; t++) pthread_join(tids[t], NULL);
        }
        double wall = now_s() - t0;
        if (cfg.bench) {
            size_t total = per * (size_t)threads, k = 0;
            double *all = malloc(total * sizeof(double));
            for (long t = 0; t < threads; t++)
                for (size_t i = 0; i < ws[t].n_lat; i++) all[k++] = ws[t].lat[i];
            qsort(all, k, sizeof(double), cmp_double);
            size_t p99 = (size_t)((double)k * 0.99);
            if (p99 >= k) p99 = k - 1;
            printf("bench: %zu calls, %ld thread(s), %.3f s, %.0f calls/s, median %.2f us, p99 %.2f us\n", k,
                   threads, wall, (double)k / wall, all[k / 2] * 1e6, all[p99] * 1e6);
            free(all);
        }
        for (long t = 0; t < threads; t++) free(ws[t].lat);
        free(ws);
        free(tids);
    }
summary:
    fflush(stdout);
    long calls = atomic_load(&cfg.calls), ok = atomic_load(&cfg.ok), bad = atomic_load(&cfg.bad);
    long galloc = atomic_load(&g_engine.gw_allocated), gfreed = atomic_load(&g_engine.gw_freed);
    fprintf(stderr,
            "host_sim: %ld calls, %ld replies ok, %ld bad; %ld results freed; %ld gateway calls, %ld buffers "
            "allocated, %ld freed\n",
            calls, ok, bad, atomic_load(&cfg.results_freed), atomic_load(&g_engine.gw_calls), galloc, gfreed);
    if (bad || ok != calls) status = 1;
    if (galloc != gfreed) {
        fprintf(stderr, "host_sim: free_response unbalanced: %ld allocated, %ld freed\n", galloc, gfreed);
        status = 1;
    }

done:
    for (size_t i = 0; i < n_cmds; i++) free_command(&cmds[i]);
    free(cmds);
    free(hosts);
    gateway_close(g_engine.gw);
    /* Unloading is what WorkManager may do at any time; --keep-loaded skips it so that memory the
     * plugin keeps in statics stays reachable for leak checkers (and symbols stay resolvable). */
    if (!keep_loaded) dlclose(h);
    return status;
}
