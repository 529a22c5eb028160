#pragma once
#include <stddef.h>
#include <stdint.h>

/// Plain C reference for the engine benchmark: builds one flow per packet (inside and outside
/// open-addressing indexes over a flat flow array), then times `rounds` passes of
/// inbound lookup + rewrite, endpoint swap, outbound lookup + rewrite, swap — the same loop as the
/// Swift benchmark, with RFC 1624 incremental checksums. Returns packets per second.
double hostnat_baseline_run(uint8_t *packets, size_t slot, const size_t *lengths, size_t flows, size_t rounds);
