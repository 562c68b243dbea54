#define _POSIX_C_SOURCE 200809L
#include "gateway.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

typedef struct {
    char *method;
    int32_t status;
    char *body; /* NULL: reply with a NULL body */
    int used;
} canned;

struct gateway {
    int http;
    /* script mode */
    canned *replies;
    size_t n_replies;
    /* http mode */
    char host[256], port[16], prefix[256];
    /* both */
    FILE *record;
    pthread_mutex_t lock;
};

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static int load_script(gateway *g, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "host_sim: cannot open gateway script %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        char *m = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        size_t mlen = (size_t)(p - m);
        while (*p == ' ' || *p == '\t') p++;
        char *end;
        long st = strtol(p, &end, 10);
        if (end == p) {
            fprintf(stderr, "host_sim: %s:%d: expected 'Method STATUS [BODY]'\n", path, lineno);
            free(line);
            fclose(f);
            return -1;
        }
        p = end;
        if (*p == ' ' || *p == '\t') p++;
        canned *nr = realloc(g->replies, (g->n_replies + 1) * sizeof *nr);
        if (!nr) break;
        g->replies = nr;
        canned *c = &g->replies[g->n_replies++];
        c->method = dup_n(m, mlen);
        c->status = (int32_t)st;
        c->body = strcmp(p, "<null>") == 0 ? NULL : dup_n(p, strlen(p));
        c->used = 0;
    }
    free(line);
    fclose(f);
    return 0;
}

gateway *gateway_open(const char *spec, const char *record_path) {
    gateway *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    pthread_mutex_init(&g->lock, NULL);
    if (strncmp(spec, "script:", 7) == 0) {
        if (load_script(g, spec + 7)) goto bad;
    } else if (strncmp(spec, "http://", 7) == 0) {
        g->http = 1;
        const char *h = spec + 7, *slash = strchr(h, '/');
        size_t hl = slash ? (size_t)(slash - h) : strlen(h);
        const char *colon = memchr(h, ':', hl);
        if (!colon || (size_t)(colon - h) >= sizeof g->host || hl - (size_t)(colon - h) - 1 >= sizeof g->port ||
            (slash && strlen(slash) >= sizeof g->prefix)) {
            fprintf(stderr, "host_sim: bad gateway URL %s (want http://HOST:PORT[/PREFIX])\n", spec);
            goto bad;
        }
        memcpy(g->host, h, (size_t)(colon - h));
        memcpy(g->port, colon + 1, hl - (size_t)(colon - h) - 1);
        if (slash) {
            strcpy(g->prefix, slash);
            size_t pl = strlen(g->prefix);
            if (pl && g->prefix[pl - 1] == '/') g->prefix[pl - 1] = 0;
        }
    } else {
        fprintf(stderr, "host_sim: unknown gateway %s (want script:FILE or http://HOST:PORT)\n", spec);
        goto bad;
    }
    if (record_path) {
        g->record = fopen(record_path, "w");
        if (!g->record) {
            fprintf(stderr, "host_sim: cannot write %s: %s\n", record_path, strerror(errno));
            goto bad;
        }
    }
    return g;
bad:
    gateway_close(g);
    return NULL;
}

void gateway_close(gateway *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_replies; i++) {
        free(g->replies[i].method);
        free(g->replies[i].body);
    }
    free(g->replies);
    if (g->record) fclose(g->record);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static int32_t set_body(const char *body, size_t len, uint8_t **resp, int32_t *resp_len) {
    *resp = (uint8_t *)dup_n(body, len);
    *resp_len = *resp ? (int32_t)len : 0;
    return 0;
}

/* Script mode: the replies for a method are used in file order; the last one repeats. */
static int32_t script_call(gateway *g, const char *method, uint8_t **resp, int32_t *resp_len) {
    canned *pick = NULL;
    for (size_t i = 0; i < g->n_replies; i++) {
        canned *c = &g->replies[i];
        if (strcmp(c->method, method) != 0) continue;
        pick = c;
        if (!c->used) break;
    }
    if (!pick) {
        char msg[300];
        int n = snprintf(msg, sizeof msg, "host_sim: no scripted reply for method %s", method);
        set_body(msg, (size_t)n, resp, resp_len);
        return 12; /* UNIMPLEMENTED */
    }
    pick->used = 1;
    if (pick->body) set_body(pick->body, strlen(pick->body), resp, resp_len);
    return pick->status;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int32_t http_fail(const char *what, uint8_t **resp, int32_t *resp_len) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "host_sim http gateway: %s", what);
    set_body(msg, (size_t)n, resp, resp_len);
    return 14; /* UNAVAILABLE */
}

/* Decodes a chunked body in place; returns the decoded length or -1. */
static long dechunk(char *b, size_t n) {
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        if (in >= n) return -1;
        unsigned long sz = strtoul(b + in, &end, 16);
        char *crlf = strstr(b + in, "\r\n");
        if (!crlf || end == b + in) return -1;
        in = (size_t)(crlf - b) + 2;
        if (sz == 0) return (long)out;
        if (sz > n - in) return -1;
        memmove(b + out, b + in, sz);
        out += sz;
        in += sz + 2;
    }
}

static int32_t http_call(gateway *g, const char *service, const char *method, const uint8_t *req,
                         int32_t req_len, uint8_t **resp, int32_t *resp_len) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(g->host, g->port, &hints, &ai);
    if (rc) return http_fail(gai_strerror(rc), resp, resp_len);
    int fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {30, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) return http_fail("connect failed", resp, resp_len);
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "POST %s/v1/invoke/%s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "X-Virtufin-Service: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
                      g->prefix, method, g->host, g->port, service, (int)req_len);
    if (hl < 0 || (size_t)hl >= sizeof head || write_all(fd, head, (size_t)hl) ||
        write_all(fd, (const char *)req, (size_t)req_len)) {
        close(fd);
        return http_fail("sending the request failed", resp, resp_len);
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) break;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(buf);
            buf = NULL;
            break;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf) return http_fail("reading the response failed", resp, resp_len);
    buf[n] = 0;
    int status = 0;
    char *hdr_end = strstr(buf, "\r\n\r\n");
    if (!hdr_end || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return http_fail("malformed HTTP response", resp, resp_len);
    }
    char *body = hdr_end + 4;
    size_t blen = n - (size_t)(body - buf);
    *hdr_end = 0;
    /* Header names are case-insensitive: scan a lower-cased copy of the header block. */
    for (char *c = buf; *c; c++)
        if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    char *cl = strstr(buf, "\r\ncontent-length:");
    if (strstr(buf, "\r\ntransfer-encoding: chunked")) {
        long d = dechunk(body, blen);
        if (d < 0) {
            free(buf);
            return http_fail("malformed chunked body", resp, resp_len);
        }
        blen = (size_t)d;
    } else if (cl) {
        unsigned long want = strtoul(cl + 17, NULL, 10);
        if (want > blen) {
            free(buf);
            return http_fail("truncated body", resp, resp_len);
        }
        blen = want;
    }
    set_body(body, blen, resp, resp_len);
    free(buf);
    return (status >= 200 && status < 300) ? 0 : status;
}

int32_t gateway_invoke(gateway *g, const char *service, const char *method, const uint8_t *req,
                       int32_t req_len, uint8_t **resp, int32_t *resp_len) {
    *resp = NULL;
    *resp_len = 0;
    if (req_len < 0) req_len = 0;
    int32_t rc;
    pthread_mutex_lock(&g->lock);
    if (g->record) {
        fprintf(g->record, "%s %s ", service, method);
        fwrite(req, 1, (size_t)req_len, g->record);
        fputc('\n', g->record);
        fflush(g->record);
    }
    if (!g->http) {
        rc = script_call(g, method, resp, resp_len);
        pthread_mutex_unlock(&g->lock);
        return rc;
    }
    pthread_mutex_unlock(&g->lock);
    return http_call(g, service, method, req, req_len, resp, resp_len);
}
