#include "CHostnatBaseline.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { uint32_t in_ip, remote_ip, nat_ip; uint16_t in_port, remote_port, nat_port; uint8_t proto, state; uint64_t expires; } flow_t;

static inline uint64_t mix(uint64_t a, uint64_t b) { __uint128_t m = (__uint128_t)a * b; return (uint64_t)m ^ (uint64_t)(m >> 64); }
static inline uint64_t hash5(uint32_t a, uint32_t b, uint16_t pa, uint16_t pb, uint8_t p) {
  return mix(((uint64_t)a << 32 | b) ^ 0xa0761d6478bd642full, ((uint64_t)pa << 32 | (uint64_t)pb << 16 | p) ^ 0xe7037ed1a0b428dbull);
}
static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t ld32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline void st16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static inline void st32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static inline uint16_t fold(uint64_t s) { s = (s & 0xffffffff) + (s >> 32); s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16); return (uint16_t)s; }
static inline uint16_t upd(uint16_t c, uint32_t oip, uint32_t nip, uint16_t op, uint16_t np) {
  return ~fold((uint16_t)~c + (uint64_t)(uint16_t)~(oip >> 16) + (uint16_t)~oip + (uint16_t)~op + (nip >> 16) + (nip & 0xffff) + np);
}
static inline void rewrite(uint8_t *b, int dst, uint32_t nip, uint16_t np) {
  int hl = (b[0] & 15) * 4, ipo = dst ? 16 : 12, po = hl + (dst ? 2 : 0);
  uint32_t oip = ld32(b + ipo); uint16_t op = ld16(b + po);
  st16(b + 10, ~fold((uint16_t)~ld16(b + 10) + (uint64_t)(uint16_t)~(oip >> 16) + (uint16_t)~oip + (nip >> 16) + (nip & 0xffff)));
  st32(b + ipo, nip);
  int co = hl + (b[9] == 6 ? 16 : 6);
  uint16_t c = ld16(b + co);
  if (b[9] == 6 || c != 0) { c = upd(c, oip, nip, op, np); if (b[9] == 17 && c == 0) c = 0xffff; st16(b + co, c); }
  st16(b + po, np);
}
static inline void swap_ep(uint8_t *p) { uint32_t a, b; memcpy(&a, p + 12, 4); memcpy(&b, p + 16, 4); memcpy(p + 12, &b, 4); memcpy(p + 16, &a, 4);
  uint16_t s, d; memcpy(&s, p + 20, 2); memcpy(&d, p + 22, 2); memcpy(p + 20, &d, 2); memcpy(p + 22, &s, 2); }

double hostnat_baseline_run(uint8_t *packets, size_t slot, const size_t *lengths, size_t flows, size_t rounds) {
  (void)lengths;
  size_t cap = 16; while (cap < flows * 2) cap <<= 1; size_t mask = cap - 1;
  flow_t *f = calloc(flows, sizeof *f); uint64_t *in = calloc(cap, 8), *out = calloc(cap, 8);
  if (!f || !in || !out) { free(f); free(in); free(out); return 0; }
  for (size_t i = 0; i < flows; i++) {
    uint8_t *b = packets + i * slot; int hl = (b[0] & 15) * 4;
    flow_t x = { ld32(b + 12), ld32(b + 16), 0xC0000200u + (uint32_t)(i / 60000), ld16(b + hl), ld16(b + hl + 2), (uint16_t)(1024 + i % 60000), b[9], 0, 0 };
    f[i] = x;
    uint64_t h = hash5(x.in_ip, x.remote_ip, x.in_port, x.remote_port, x.proto); size_t j = h & mask;
    while (in[j]) j = (j + 1) & mask; in[j] = (h & 0xffffffff) << 32 | (i + 1);
    h = hash5(x.nat_ip, x.remote_ip, x.nat_port, x.remote_port, x.proto); j = h & mask;
    while (out[j]) j = (j + 1) & mask; out[j] = (h & 0xffffffff) << 32 | (i + 1);
    rewrite(b, 0, x.nat_ip, x.nat_port); swap_ep(b);
  }
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  size_t ok = 0; uint64_t now = 0;
  for (size_t r = 0; r < rounds; r++) {
    now += 1000;
    for (size_t i = 0; i < flows; i++) {
      uint8_t *b = packets + i * slot; int hl = (b[0] & 15) * 4;
      uint32_t nip = ld32(b + 16), rip = ld32(b + 12); uint16_t np = ld16(b + hl + 2), rp = ld16(b + hl); uint8_t p = b[9];
      uint64_t h = hash5(nip, rip, np, rp, p); size_t j = h & mask; flow_t *x = NULL;
      for (;;) { uint64_t e = out[j]; if (!e) break; if ((e >> 32) == (h & 0xffffffff)) { flow_t *c = &f[(e & 0xffffffff) - 1];
        if (c->nat_ip == nip && c->remote_ip == rip && c->nat_port == np && c->remote_port == rp && c->proto == p) { x = c; break; } } j = (j + 1) & mask; }
      if (x) { x->expires = now + 1200; rewrite(b, 1, x->in_ip, x->in_port); ok++; }
      swap_ep(b);
      uint32_t iip = ld32(b + 12), dip = ld32(b + 16); uint16_t ip_ = ld16(b + hl), dp = ld16(b + hl + 2);
      h = hash5(iip, dip, ip_, dp, p); j = h & mask; x = NULL;
      for (;;) { uint64_t e = in[j]; if (!e) break; if ((e >> 32) == (h & 0xffffffff)) { flow_t *c = &f[(e & 0xffffffff) - 1];
        if (c->in_ip == iip && c->remote_ip == dip && c->in_port == ip_ && c->remote_port == dp && c->proto == p) { x = c; break; } } j = (j + 1) & mask; }
      if (x) { x->expires = now + 1200; rewrite(b, 0, x->nat_ip, x->nat_port); ok++; }
      swap_ep(b);
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  free(f); free(in); free(out);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  return ok == 2 * rounds * flows && s > 0 ? (double)ok / s : 0;
}
