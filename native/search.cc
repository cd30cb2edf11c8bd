// search.cc — literal search for the replace agent (agent/ layer, see src/agent/literal-search.ts).
//
// findAll(hay, pat, from, out) writes into `out` (an Int32Array) the start of every occurrence
// of `pat` in `hay` at or after `from`, overlapping ones included (the search goes on one byte
// after each start), in increasing order, until `out` is full; returns how many it wrote. A
// caller that gets out.length back asks again from one past the last start.
//
// Why native: a rule must look at every byte that passes. V8's Buffer.indexOf searches about
// 6 GB/s over random bytes out of cache; glibc's memmem (a Horspool search on byte pairs) twice
// that, and one call finds every match of a dense body (a 64 KiB segment with a thousand matches
// costs one call, not a thousand). Plain N-API (no C++ wrapper): the call itself is on the path.
// Bad arguments return -1 (the JS side checks its own arguments; this never throws).

#include <node_api.h>

#include <cstdint>
#include <cstring>

namespace {

bool ByteView(napi_env env, napi_value v, const uint8_t** data, size_t* len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  void* p = nullptr;
  size_t n = 0;
  if (napi_get_typedarray_info(env, v, &type, &n, &p, nullptr, nullptr) != napi_ok) return false;
  if (type != napi_uint8_array) return false;
  *data = static_cast<const uint8_t*>(p);
  *len = n;
  return true;
}

napi_value Int(napi_env env, int32_t v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

napi_value FindAll(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 4) return Int(env, -1);
  const uint8_t* hay;
  const uint8_t* pat;
  size_t n, m;
  if (!ByteView(env, argv[0], &hay, &n) || !ByteView(env, argv[1], &pat, &m)) return Int(env, -1);
  int32_t from = 0;
  if (napi_get_value_int32(env, argv[2], &from) != napi_ok || from < 0) return Int(env, -1);
  bool is = false;
  napi_typedarray_type type;
  void* op = nullptr;
  size_t cap = 0;
  if (napi_is_typedarray(env, argv[3], &is) != napi_ok || !is) return Int(env, -1);
  if (napi_get_typedarray_info(env, argv[3], &type, &cap, &op, nullptr, nullptr) != napi_ok || type != napi_int32_array) return Int(env, -1);
  int32_t* out = static_cast<int32_t*>(op);
  if (m == 0 || n > INT32_MAX) return Int(env, -1);
  size_t at = static_cast<size_t>(from);
  size_t k = 0;
  while (k < cap && at + m <= n) {
    const void* p = memmem(hay + at, n - at, pat, m);
    if (p == nullptr) break;
    const size_t i = static_cast<const uint8_t*>(p) - hay;
    out[k++] = static_cast<int32_t>(i);
    at = i + 1;
  }
  return Int(env, static_cast<int32_t>(k));
}

napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "findAll", NAPI_AUTO_LENGTH, FindAll, nullptr, &fn) == napi_ok) {
    napi_set_named_property(env, exports, "findAll", fn);
  }
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
