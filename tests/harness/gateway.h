/* Gateway back ends for the simulated host: canned replies from a script, or HTTP to a WSM. */
#ifndef HARNESS_GATEWAY_H
#define HARNESS_GATEWAY_H

#include <stdint.h>
#include <stdio.h>

typedef struct gateway gateway;

/* spec: "script:FILE" or "http://HOST:PORT[/PREFIX]". record: NULL or a file for call records.
 * Returns NULL (with a message on stderr) on a bad spec or unreadable script. */
gateway *gateway_open(const char *spec, const char *record_path);
void gateway_close(gateway *g);

/* Performs one call. On return *resp is NULL or a malloc'd body of *resp_len bytes (the caller
 * frees it). Returns 0 on success, non-zero otherwise. Thread-safe. */
int32_t gateway_invoke(gateway *g, const char *service, const char *method, const uint8_t *req,
                       int32_t req_len, uint8_t **resp, int32_t *resp_len);

#endif
