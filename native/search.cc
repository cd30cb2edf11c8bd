// search.cc — literal search for the replace agent (agent/ layer, see src/agent/literal-search.ts).
//
// replaceLiterals(...): the agent's whole scan of a segment when its rules are all literals
// (below). findAll(hay, pat, from, out) writes into `out` (an Int32Array) the start of every occurrence
// of `pat` in `hay` at or after `from`, overlapping ones included (the search goes on one byte
// after each start), in increasing order, until `out` is full; returns how many it wrote. A
// caller that gets out.length back asks again from one past the last start.
//
// Why native: a rule must look at every byte that passes. V8's Buffer.indexOf searches about
// 6 GB/s over random bytes out of cache; glibc's memmem (a Horspool search on byte pairs) twice
// that, the vector search below (FindFar) another 1.6× (25 against 15.7 GiB/s over 64 MiB of
// random bytes in 64 KiB pieces, this machine); and one call finds every match of a dense body
// (a 64 KiB segment with a thousand matches costs one call, not a thousand). Plain N-API (no C++
// wrapper): the call itself is on the path.
// Bad arguments return -1 (the JS side checks its own arguments; this never throws).

#include <node_api.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

bool Int32View(napi_env env, napi_value v, int32_t** data, size_t* len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  void* p = nullptr;
  if (napi_get_typedarray_info(env, v, &type, len, &p, nullptr, nullptr) != napi_ok || type != napi_int32_array) return false;
  *data = static_cast<int32_t*>(p);
  return true;
}

constexpr int64_t kNone = INT64_MAX;
// The KMP failure function of the literal whose held suffix is being found (one scan at a time per thread).
thread_local std::vector<int32_t> kmpFail;

// The next match near `from` (the next kNear bytes) is found by its rarest byte: glibc's memchr
// (SIMD) jumps to the next place that byte occurs, memcmp checks the pattern there. In a dense
// body the next match is near and that byte seldom occurs outside matches: one memchr and one
// memcmp a match (the Horspool skip loop this replaced: 0.77 against 1.24 GiB/s through the agent
// on the HTTP bench's body, src/bench/scan.ts). Past kNear, the far search (FindFar: fast over
// long stretches without a match, too dear a call per match of a dense body).
constexpr size_t kNear = 512;
constexpr int kMisses = 8;

// Far search: candidates are the starts where the pattern's first and last bytes both occur,
// found 32 starts at a time with AVX2 (the "SIMD-friendly" substring search of Wojciech Muła;
// without AVX2, glibc's memmem does it all); each is checked with memcmp. Over bytes that are not
// text (the iperf3 bench's random payload) such a pair is 256 times rarer than one byte. Input
// full of the pair (kFarMisses false candidates in a call) goes to memmem for the rest, so the
// search stays linear whatever the input. A pattern of one byte is memchr's.
constexpr int kFarMisses = 64;

int64_t FindMemmem(const uint8_t* hay, size_t n, size_t from, const uint8_t* pat, size_t m) {
  if (from + m > n) return kNone;
  const void* f = memmem(hay + from, n - from, pat, m);
  return f == nullptr ? kNone : static_cast<const uint8_t*>(f) - hay;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) int64_t FindFarAvx2(const uint8_t* hay, size_t n, size_t from, const uint8_t* pat, size_t m) {
  const __m256i first = _mm256_set1_epi8(static_cast<char>(pat[0]));
  const __m256i last = _mm256_set1_epi8(static_cast<char>(pat[m - 1]));
  size_t i = from;
  int misses = 0;
  // Starts s in [i, i + 32) whose first and last bytes match, while both loads stay inside hay.
  for (; i + m + 31 <= n; i += 32) {
    const __m256i x = _mm256_cmpeq_epi8(first, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hay + i)));
    const __m256i y = _mm256_cmpeq_epi8(last, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hay + i + m - 1)));
    uint32_t mask = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_and_si256(x, y)));
    while (mask != 0) {
      const size_t s = i + static_cast<size_t>(__builtin_ctz(mask));
      if (memcmp(hay + s + 1, pat + 1, m - 2) == 0) return static_cast<int64_t>(s);
      if (++misses >= kFarMisses) return FindMemmem(hay, n, s + 1, pat, m);
      mask &= mask - 1;
    }
  }
  return FindMemmem(hay, n, i, pat, m);
}

const bool kAvx2 = __builtin_cpu_supports("avx2");
#endif

// First start of pat (m bytes) at or after `from` in hay[0, n), or kNone.
int64_t FindFar(const uint8_t* hay, size_t n, size_t from, const uint8_t* pat, size_t m) {
  if (from + m > n) return kNone;
  if (m == 1) {
    const void* f = memchr(hay + from, pat[0], n - from);
    return f == nullptr ? kNone : static_cast<const uint8_t*>(f) - hay;
  }
#if defined(__x86_64__)
  if (kAvx2) return FindFarAvx2(hay, n, from, pat, m);
#endif
  return FindMemmem(hay, n, from, pat, m);
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
    const int64_t i = FindFar(hay, n, at, pat, m);
    if (i == kNone) break;
    out[k++] = static_cast<int32_t>(i);
    at = static_cast<size_t>(i) + 1;
  }
  return Int(env, static_cast<int32_t>(k));
}

// How common a byte is in text and protocol headers (higher: more common; the heuristic of
// ripgrep's memchr "rare byte" prefilter, coarser): space and lower-case letters by English
// frequency, then line ends, digits, common punctuation, upper case, other printable bytes,
// control and non-ASCII bytes.
uint8_t RankOf(uint8_t c) {
  static const char kLower[] = "etaoinshrdlcumwfgypbvkjxqz";
  if (c == ' ') return 255;
  if (c >= 'a' && c <= 'z') return static_cast<uint8_t>(250 - 4 * (strchr(kLower, c) - kLower));
  if (c == '\n' || c == '\r' || c == '\t') return 140;
  if (c >= '0' && c <= '9') return 130;
  if (c == '.' || c == ',' || c == '-' || c == '/' || c == ':' || c == '=' || c == '"') return 120;
  if (c >= 'A' && c <= 'Z') return 90;
  if (c >= 0x21 && c < 0x7f) return 60;
  return 20;
}

// RankOf for every byte, made once.
struct ByteRanks {
  uint8_t r[256];
  ByteRanks() {
    for (int c = 0; c < 256; c++) r[c] = RankOf(static_cast<uint8_t>(c));
  }
};
const ByteRanks kRanks;

struct Near {
  const uint8_t* pat = nullptr;
  size_t m = 0;
  // The pattern's rarest byte and its index in the pattern (the last of equal rank).
  uint8_t rare = 0;
  size_t rareAt = 0;

  void Init(const uint8_t* p, size_t len) {
    pat = p;
    m = len;
    rareAt = 0;
    for (size_t i = 1; i < m; i++) {
      if (kRanks.r[p[i]] <= kRanks.r[p[rareAt]]) rareAt = i;
    }
    rare = p[rareAt];
  }

  // First start at or after `from` in hay[0, n), or kNone.
  int64_t Find(const uint8_t* hay, size_t n, size_t from) const {
    const size_t near = std::min(n, from + kNear);
    size_t i = from;
    // Starts s in [i, near - m]: their rare byte is at s + rareAt. Input where that byte is not
    // rare (kMisses false candidates) goes to memmem, linear whatever the input.
    for (int misses = 0; i + m <= near && misses < kMisses; misses++) {
      const void* f = memchr(hay + i + rareAt, rare, near - m + 1 - i);
      if (f == nullptr) {
        i = near - m + 1;
        break;
      }
      const size_t s = static_cast<size_t>(static_cast<const uint8_t*>(f) - hay) - rareAt;
      if (memcmp(hay + s, pat, m) == 0) return static_cast<int64_t>(s);
      i = s + 1;
    }
    return FindFar(hay, n, i, pat, m);
  }
};

// Many rules (src/agent/literal-search.ts packLiterals builds the index once per rule set): one
// pass over the buffer instead of one search per rule (R searches of the whole buffer). A position
// whose first two bytes start no pattern (`any`) is skipped at once; at one that does, each
// length of pattern with those two bytes is tried by a hash of the bytes there (FNV-1a, one
// running hash for the lengths in ascending order) in a table of the patterns: the cost of a
// position is its longest candidate length, not the number of rules, whatever the input — many
// patterns sharing a prefix the input repeats cost no more than one.
//
// The index (Int32Array): a header [K0, K1, SBITS, offLens, nLens, offLists, nLists, offTable,
// offChain]; per kind (0: case-sensitive; 1: case-insensitive, patterns lowered, looked up in
// `low`) heads by byte of the one-byte patterns (257) and of the longer ones by their first byte
// (257: a partial at the buffer's last byte); per kind its K sorted two-byte keys, their heads
// into lens (K + 1: the distinct lengths, ascending) and into lists (K + 1: the rules, ascending);
// then lens, lists, the hash table (2^SBITS heads) and the chains (R: the next rule in a slot,
// ascending; -1 ends one). `any` (Uint8Array, 65,536): bit 0 when a case-sensitive rule starts
// with those two bytes, bit 1 a case-insensitive one, bit 2 when a one-byte pattern (either kind)
// is the first of them.
constexpr size_t kH1 = 257;
constexpr size_t kHeader = 9;
constexpr uint32_t kFnvOffset = 0x811C9DC5u;
constexpr uint32_t kFnvPrime = 0x01000193u;

// The table slot of a pattern of length `len` whose bytes hash to `h` (literal-search.ts slotOf).
inline size_t SlotOf(uint32_t h, size_t len, unsigned bits) {
  const uint32_t x = (h ^ (static_cast<uint32_t>(len) * 0x9E3779B1u)) * 0x85EBCA6Bu;
  return static_cast<size_t>(x >> (32 - bits));
}

struct Many {
  const int32_t* h1[2];
  const int32_t* hf[2];
  const int32_t* keys[2];
  const int32_t* lensAt[2];
  const int32_t* listAt[2];
  size_t nkeys[2];
  const int32_t* lens;
  size_t nLens;
  const int32_t* lists;
  size_t nLists;
  const int32_t* table;
  unsigned bits;
  const int32_t* chain;
  const uint8_t* any;
  size_t nr;
  const int32_t* rules;
  const uint8_t* pats;
  // Bytes hashed and entries tried so far in this call, and how many it may take (Bailed).
  size_t work = 0;
  size_t budget = 0;

  // The work went past the budget: input crafted against the patterns (a position that begins
  // a candidate at every byte, each hashed to its longest length). The caller scans the rest
  // rule by rule, or in JS: their costs do not depend on what begins where.
  bool Bailed() const { return work > budget; }

  // Checks the index's sizes (it is built in JS; a bad one must not read past): false if bad.
  // Only the sizes, per call (the whole index would cost as much as a small segment's scan);
  // every read below is bounded by them.
  bool Init(const int32_t* ix, size_t nix, const uint8_t* a, const int32_t* rl, const uint8_t* pt, size_t R) {
    if (nix < kHeader) return false;
    for (size_t i = 0; i < kHeader; i++) {
      if (ix[i] < 0) return false;
    }
    nkeys[0] = static_cast<size_t>(ix[0]);
    nkeys[1] = static_cast<size_t>(ix[1]);
    bits = static_cast<unsigned>(ix[2]);
    if (bits < 1 || bits > 26) return false;
    size_t at = kHeader;
    for (int k = 0; k < 2; k++) {
      h1[k] = ix + at;
      hf[k] = ix + at + kH1;
      at += 2 * kH1;
    }
    for (int k = 0; k < 2; k++) {
      keys[k] = ix + at;
      lensAt[k] = keys[k] + nkeys[k];
      listAt[k] = lensAt[k] + nkeys[k] + 1;
      at += 3 * nkeys[k] + 2;
    }
    const size_t offLens = static_cast<size_t>(ix[3]), offLists = static_cast<size_t>(ix[5]);
    const size_t offTable = static_cast<size_t>(ix[7]), offChain = static_cast<size_t>(ix[8]);
    nLens = static_cast<size_t>(ix[4]);
    nLists = static_cast<size_t>(ix[6]);
    if (at > nix || offLens > nix || nLens > nix - offLens || offLists > nix || nLists > nix - offLists ||
        offTable > nix || (size_t{1} << bits) > nix - offTable || offChain > nix || R > nix - offChain) {
      return false;
    }
    lens = ix + offLens;
    lists = ix + offLists;
    table = ix + offTable;
    chain = ix + offChain;
    any = a;
    nr = R;
    rules = rl;
    pats = pt;
    return true;
  }

  // The first rule of the list [h[k], h[k+1]) of `lists`, or nr (none, or out of bounds).
  size_t FirstOf(const int32_t* h, size_t k) const {
    const int32_t a = h[k], b = h[k + 1];
    if (a < 0 || a >= b || static_cast<size_t>(b) > nLists) return nr;
    const int32_t r = lists[a];
    return r < 0 ? nr : std::min(static_cast<size_t>(r), nr);
  }

  // The index of kind k's two-byte key, or -1.
  int64_t KeyOf(int k, size_t key) const {
    const int32_t* ks = keys[k];
    size_t lo = 0, hi = nkeys[k];
    while (lo < hi) {
      const size_t mid = (lo + hi) >> 1;
      if (static_cast<size_t>(ks[mid]) < key) lo = mid + 1;
      else hi = mid;
    }
    return lo < nkeys[k] && static_cast<size_t>(ks[lo]) == key ? static_cast<int64_t>(lo) : -1;
  }

  // The lowest rule of kind k starting with the two bytes `key` below `best` with an event at s
  // (a whole match, or unless final a proper prefix of its pattern ending the buffer), or `best`.
  size_t Check(int kind, size_t key, const uint8_t* hay, size_t n, size_t s, bool final, size_t best, bool* decided) {
    const int64_t x = KeyOf(kind, key);
    if (x < 0) return best;
    const size_t rest = n - s;
    const int32_t la = lensAt[kind][x], lb = lensAt[kind][x + 1];
    if (la < 0 || la > lb || static_cast<size_t>(lb) > nLens) return best;
    // Whole matches, by length: one running hash of the bytes at s.
    uint32_t h = kFnvOffset;
    size_t j = 0;
    bool longer = false;  // a pattern of this key longer than what is left
    for (int32_t i = la; i < lb; i++) {
      if (lens[i] <= 0) return best;
      const size_t len = static_cast<size_t>(lens[i]);
      if (len > rest) {
        longer = true;
        break;
      }
      work += len - j + 1;
      for (; j < len; j++) h = (h ^ hay[s + j]) * kFnvPrime;
      size_t steps = 0;
      for (int32_t r = table[SlotOf(h, len, bits)]; r >= 0 && static_cast<size_t>(r) < best && steps < nr; r = chain[r], steps++) {
        const int32_t* q = rules + 5 * r;
        if (static_cast<size_t>(q[1]) == len && q[2] == kind && memcmp(hay + s, pats + q[0], len) == 0) {
          best = static_cast<size_t>(r);
          *decided = true;
          break;
        }
      }
    }
    if (final || !longer) return best;
    // Near the end: a longer pattern whose beginning is all that is left holds the scan there.
    const int32_t a = listAt[kind][x], b = listAt[kind][x + 1];
    if (a < 0 || a > b || static_cast<size_t>(b) > nLists) return best;
    for (int32_t i = a; i < b; i++) {
      const int32_t li = lists[i];
      if (li < 0 || static_cast<size_t>(li) >= best) break;  // best <= nr: li is a rule
      work += rest;
      const int32_t* q = rules + 5 * li;
      if (static_cast<size_t>(q[1]) > rest && memcmp(hay + s, pats + q[0], rest) == 0) {
        best = static_cast<size_t>(li);
        *decided = false;
        break;
      }
    }
    return best;
  }

  // The leftmost event at or after `pos` (kNone: none), its rule (the lowest at that start) and
  // whether it is decided: what the per-rule search below finds, in one pass. Past the budget it
  // returns kNone early (Bailed: the answer is not known).
  int64_t Next(const uint8_t* buf, const uint8_t* low, size_t n, size_t pos, bool final, size_t R, size_t* rule, bool* decided) {
    const bool ci = low != buf;
    for (size_t s = pos; s < n; s++) {
      // Most positions start no pattern: skip them in a tight loop (one or two table reads each).
      if (ci) {
        while (s + 1 < n && ((any[(static_cast<size_t>(buf[s]) << 8) | buf[s + 1]] & 5) | (any[(static_cast<size_t>(low[s]) << 8) | low[s + 1]] & 2)) == 0) s++;
      } else {
        while (s + 4 < n && any[(static_cast<size_t>(buf[s]) << 8) | buf[s + 1]] == 0 && any[(static_cast<size_t>(buf[s + 1]) << 8) | buf[s + 2]] == 0 &&
               any[(static_cast<size_t>(buf[s + 2]) << 8) | buf[s + 3]] == 0 && any[(static_cast<size_t>(buf[s + 3]) << 8) | buf[s + 4]] == 0) {
          s += 4;
        }
        while (s + 1 < n && any[(static_cast<size_t>(buf[s]) << 8) | buf[s + 1]] == 0) s++;
      }
      size_t best = R;
      if (s + 1 < n) {
        const size_t kc = (static_cast<size_t>(buf[s]) << 8) | buf[s + 1];
        const size_t kl = (static_cast<size_t>(low[s]) << 8) | low[s + 1];
        const uint8_t a = static_cast<uint8_t>((any[kc] & 5) | (any[kl] & 2));
        if (a == 0) continue;
        if (a & 4) {
          // One-byte patterns: a whole match at s.
          for (int kind = 0; kind < 2; kind++) {
            const size_t r = FirstOf(h1[kind], kind ? low[s] : buf[s]);
            if (r < best) {
              best = r;
              *decided = true;
            }
          }
        }
        if (a & 1) best = Check(0, kc, buf, n, s, final, best, decided);
        if (a & 2) best = Check(1, kl, low, n, s, final, best, decided);
        if (Bailed()) return kNone;
      } else {
        // The last byte: one-byte patterns match, longer ones are undecided there.
        for (int kind = 0; kind < 2; kind++) {
          const size_t k = kind ? low[s] : buf[s];
          const size_t r1 = FirstOf(h1[kind], k);
          if (r1 < best) {
            best = r1;
            *decided = true;
          }
          const size_t rf = final ? nr : FirstOf(hf[kind], k);
          if (rf < best) {
            best = rf;
            *decided = false;
          }
        }
      }
      if (best < R) {
        *rule = best;
        return static_cast<int64_t>(s);
      }
    }
    return kNone;
  }
};

// Aho–Corasick automata of a long list (more than 64 rules), for input crafted against the
// one-pass scan above (Many gives up past its budget) and for lists Many does not take (a pattern
// longer than MANY_MAX_PATTERN): before them the JS scan did such a buffer, each rule's search on
// its own (1,000 rules over a run of "a": 0.02 GiB/s). Built once per rule set (literalAutomaton,
// kept by literal-search.ts), its cost per byte does not depend on what the bytes are.
//
// The scan's question at a position s: the lowest rule whose pattern occurs at s, or (unless
// final) whose pattern is longer than what is left and begins with it. The first is answered for
// every position of the buffer in one pass from its end: the automaton of the reversed patterns,
// run over the reversed buffer, is after reading the bytes from the end down to s in the state of
// the longest reversed pattern prefix that ends there, and every pattern occurring at s is a
// pattern of that state or of its failure chain; the lowest rule among them is a property of the
// state (`out`). A complete table (a DFA over byte classes: the bytes no pattern has are one
// class), one read per byte. The second needs only the last maxLen - 1 starts: the automaton of the
// patterns themselves (a trie with failure links) over them ends in the state of the longest
// suffix that begins a pattern; its failure chain holds every shorter one, and the lowest rule of a
// longer pattern below each is a property of the state (`sub`).
struct RevDfa {
  int32_t C = 0;
  uint8_t cls[256] = {};
  // A row of C + 1 per state: the lowest rule among the patterns that start where the state was
  // reached (R: none), then per class the next state's row offset (one dependent load a byte).
  std::vector<int32_t> table;
};

// The forward trie, flat: per state its first child, next sibling and the byte that leads to it
// (no allocation per state), its failure, depth and `sub`.
struct FwdTrie {
  std::vector<int32_t> child, sibling;
  std::vector<uint8_t> byte;
  std::vector<int32_t> fail, depth;
  std::vector<int32_t> sub;  // per state: the lowest rule of a pattern longer than the state that begins with it
  int32_t Goto(int32_t u, uint8_t c) const {
    for (int32_t v = child[static_cast<size_t>(u)]; v >= 0; v = sibling[static_cast<size_t>(v)]) {
      if (byte[static_cast<size_t>(v)] == c) return v;
    }
    return -1;
  }
  int32_t Step(int32_t u, uint8_t c) const {
    for (;;) {
      const int32_t v = Goto(u, c);
      if (v >= 0) return v;
      if (u == 0) return 0;
      u = fail[static_cast<size_t>(u)];
    }
  }
};

struct Automaton {
  size_t R = 0;
  size_t maxLen = 0;
  size_t bytes = 0;
  bool has[2] = {false, false};
  RevDfa rev[2];
  FwdTrie fwd[2];
  // Per rule its pattern's length and kind: a call's rules must be the set the automata were made of.
  std::vector<int32_t> lens, kinds;
};

// The most memory one rule set's automata may take, and all of them together (each compiled rule
// set has its own; a reload makes new ones before the old are collected); past either the JS scan
// does what they would.
constexpr size_t kAutomatonMaxBytes = 64u << 20;
constexpr size_t kAutomataMaxBytes = 256u << 20;
std::atomic<size_t> g_automataBytes{0};
const napi_type_tag kAutomatonTag = {0x7461706761746521ull, 0x41686f436f726173ull};

template <typename T>
size_t Bytes(const std::vector<T>& v) {
  return v.capacity() * sizeof(T);
}

// The automata of kind `kind`'s patterns (0: case-sensitive, 1: case-insensitive, lowered).
// False when they would take more than `room` bytes (checked before anything is allocated: per
// state a row of C + 1 and the forward trie's 21 bytes, kept; 16 bytes while building).
bool BuildKind(Automaton* a, int kind, const uint8_t* pats, const int32_t* rules, size_t R, size_t room) {
  size_t total = 0;
  for (size_t r = 0; r < R; r++) {
    if (rules[5 * r + 2] == kind) total += static_cast<size_t>(rules[5 * r + 1]);
  }
  if (total == 0) return true;
  const size_t maxStates = total + 1;
  constexpr size_t kPerState = 21 + 16;
  // At least two classes: refused before the bytes are read when even that does not fit.
  if (maxStates > room / (3 * 4 + kPerState)) return false;
  bool used[256] = {};
  for (size_t r = 0; r < R; r++) {
    const int32_t* q = rules + 5 * r;
    if (q[2] != kind) continue;
    for (int32_t j = 0; j < q[1]; j++) used[pats[q[0] + j]] = true;
  }
  RevDfa& d = a->rev[kind];
  int32_t C = 1;
  for (int b = 0; b < 256; b++) d.cls[b] = used[b] ? static_cast<uint8_t>(C++) : 0;
  d.C = C;
  const size_t W = static_cast<size_t>(C) + 1;
  if (maxStates > room / (W * 4 + kPerState)) return false;
  a->has[kind] = true;
  const int32_t none = static_cast<int32_t>(R);
  // The reversed patterns' trie in rows of W (slot 0 for `out`, state numbers until the end),
  // then completed into a DFA breadth first (a state's failure is shallower: its row is complete
  // when the state's is made).
  std::vector<int32_t>& t = d.table;
  t.reserve(maxStates * W);
  t.assign(W, -1);
  std::vector<int32_t> own(1, none);
  own.reserve(maxStates);
  for (size_t r = 0; r < R; r++) {
    const int32_t* q = rules + 5 * r;
    if (q[2] != kind) continue;
    const uint8_t* p = pats + q[0];
    const size_t m = static_cast<size_t>(q[1]);
    int32_t u = 0;
    for (size_t j = 0; j < m; j++) {
      const size_t at = static_cast<size_t>(u) * W + 1 + d.cls[p[m - 1 - j]];
      int32_t v = t[at];
      if (v < 0) {
        v = static_cast<int32_t>(own.size());
        own.push_back(none);
        t.resize(t.size() + W, -1);
        t[at] = v;
      }
      u = v;
    }
    own[static_cast<size_t>(u)] = std::min(own[static_cast<size_t>(u)], static_cast<int32_t>(r));
  }
  const size_t S = own.size();
  {
    std::vector<int32_t> fail(S, 0), queue;
    queue.reserve(S);
    t[0] = none;
    for (size_t c = 1; c < W; c++) {
      const int32_t v = t[c];
      if (v < 0) t[c] = 0;
      else queue.push_back(v);
    }
    for (size_t h = 0; h < queue.size(); h++) {
      const size_t u = static_cast<size_t>(queue[h]);
      const size_t row = u * W, frow = static_cast<size_t>(fail[u]) * W;
      t[row] = std::min(own[u], t[frow]);
      for (size_t c = 1; c < W; c++) {
        const int32_t v = t[row + c];
        if (v < 0) t[row + c] = t[frow + c];
        else {
          fail[static_cast<size_t>(v)] = t[frow + c];
          queue.push_back(v);
        }
      }
    }
  }
  for (size_t u = 0; u < S; u++) {
    for (size_t c = 1; c < W; c++) t[u * W + c] *= static_cast<int32_t>(W);
  }
  // The patterns' own trie (only the last maxLen - 1 bytes of a buffer go through it).
  FwdTrie& f = a->fwd[kind];
  f.child.assign(1, -1);
  f.sibling.assign(1, -1);
  f.byte.assign(1, 0);
  f.depth.assign(1, 0);
  for (auto* v : {&f.child, &f.sibling, &f.depth}) v->reserve(maxStates);
  f.byte.reserve(maxStates);
  std::vector<int32_t> fown(1, none), parent(1, -1);
  fown.reserve(maxStates);
  parent.reserve(maxStates);
  for (size_t r = 0; r < R; r++) {
    const int32_t* q = rules + 5 * r;
    if (q[2] != kind) continue;
    const uint8_t* p = pats + q[0];
    int32_t u = 0;
    for (int32_t j = 0; j < q[1]; j++) {
      int32_t v = f.Goto(u, p[j]);
      if (v < 0) {
        v = static_cast<int32_t>(f.child.size());
        f.child.push_back(-1);
        f.sibling.push_back(f.child[static_cast<size_t>(u)]);
        f.byte.push_back(p[j]);
        f.child[static_cast<size_t>(u)] = v;
        f.depth.push_back(j + 1);
        fown.push_back(none);
        parent.push_back(u);
      }
      u = v;
    }
    fown[static_cast<size_t>(u)] = std::min(fown[static_cast<size_t>(u)], static_cast<int32_t>(r));
  }
  const size_t F = f.child.size();
  // A child is made after its parent: from the last state back, each gives its parent its own
  // pattern's rule and those below it.
  f.sub.assign(F, none);
  for (size_t v = F - 1; v >= 1; v--) {
    const size_t pu = static_cast<size_t>(parent[v]);
    f.sub[pu] = std::min(f.sub[pu], std::min(fown[v], f.sub[v]));
  }
  f.fail.assign(F, 0);
  std::vector<int32_t>& queue = parent;  // reused: the parents are no longer needed
  queue.clear();
  for (int32_t v = f.child[0]; v >= 0; v = f.sibling[static_cast<size_t>(v)]) queue.push_back(v);
  for (size_t h = 0; h < queue.size(); h++) {
    const int32_t u = queue[h];
    for (int32_t v = f.child[static_cast<size_t>(u)]; v >= 0; v = f.sibling[static_cast<size_t>(v)]) {
      f.fail[static_cast<size_t>(v)] = f.Step(f.fail[static_cast<size_t>(u)], f.byte[static_cast<size_t>(v)]);
      queue.push_back(v);
    }
  }
  a->bytes += Bytes(t) + Bytes(f.child) + Bytes(f.sibling) + Bytes(f.byte) + Bytes(f.fail) + Bytes(f.depth) + Bytes(f.sub);
  return true;
}

void FreeAutomaton(napi_env env, void* data, void* /*hint*/) {
  Automaton* a = static_cast<Automaton*>(data);
  g_automataBytes.fetch_sub(a->bytes);
  int64_t left = 0;
  napi_adjust_external_memory(env, -static_cast<int64_t>(a->bytes), &left);
  delete a;
}

// literalAutomaton(pats, rules): the automata of a packed rule set (replaceLiterals' `pats` and
// `rules`), an opaque value replaceLiterals takes; null when they would take more than
// kAutomatonMaxBytes, or all of them more than kAutomataMaxBytes (or bad arguments).
napi_value LiteralAutomaton(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_value null;
  napi_get_null(env, &null);
  const uint8_t* pats;
  size_t np, nr;
  int32_t* rules;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 2 || !ByteView(env, argv[0], &pats, &np) ||
      !Int32View(env, argv[1], &rules, &nr) || nr % 5 != 0 || nr == 0) {
    return null;
  }
  const size_t R = nr / 5;
  std::unique_ptr<Automaton> a(new Automaton());
  a->R = R;
  a->lens.resize(R);
  a->kinds.resize(R);
  for (size_t r = 0; r < R; r++) {
    const int32_t* q = rules + 5 * r;
    if (q[0] < 0 || q[1] <= 0 || static_cast<size_t>(q[0]) + q[1] > np || (q[2] != 0 && q[2] != 1)) return null;
    a->maxLen = std::max(a->maxLen, static_cast<size_t>(q[1]));
    a->lens[r] = q[1];
    a->kinds[r] = q[2];
  }
  a->bytes = Bytes(a->lens) + Bytes(a->kinds);
  const size_t inUse = g_automataBytes.load();
  const size_t room = std::min(kAutomatonMaxBytes, inUse < kAutomataMaxBytes ? kAutomataMaxBytes - inUse : 0);
  for (int kind = 0; kind < 2; kind++) {
    if (a->bytes > room || !BuildKind(a.get(), kind, pats, rules, R, room - a->bytes)) return null;
  }
  napi_value v;
  if (napi_create_external(env, a.get(), FreeAutomaton, nullptr, &v) != napi_ok) return null;
  Automaton* made = a.release();  // the finalizer owns it now
  g_automataBytes.fetch_add(made->bytes);
  int64_t total = 0;
  napi_adjust_external_memory(env, static_cast<int64_t>(made->bytes), &total);
  // Untagged it would never be taken (replaceLiterals checks the tag): null, and freed when collected.
  if (napi_type_tag_object(env, v, &kAutomatonTag) != napi_ok) return null;
  return v;
}

// Per call: the lowest rule whose pattern starts at each position from `lo` (R: none), and from
// `tailLo` on the lowest rule of a longer pattern that begins with the rest of the buffer.
thread_local std::vector<int32_t> acRule;
thread_local std::vector<int32_t> acUndecided;

struct AcScan {
  // The per-call arrays go back to the allocator after a scan over more than a mebibyte's worth
  // of positions (a long held buffer): a thread keeps at most that between calls. Only a scan
  // that ran (Prepare) touches them.
  ~AcScan() {
    if (a == nullptr) return;
    if (acRule.capacity() > (size_t{1} << 18)) std::vector<int32_t>().swap(acRule);
    if (acUndecided.capacity() > (size_t{1} << 18)) std::vector<int32_t>().swap(acUndecided);
  }

  const Automaton* a = nullptr;
  size_t n = 0, lo = 0, tailLo = 0;
  int32_t none = 0;
  bool final = true;
  // acRule's and acUndecided's data (a thread_local costs a call per access).
  const int32_t* ruleAt = nullptr;
  int32_t* undecidedAt = nullptr;

  void Prepare(const Automaton* au, const uint8_t* buf, const uint8_t* low, size_t len, size_t from, bool fin) {
    a = au;
    n = len;
    lo = from;
    final = fin;
    none = static_cast<int32_t>(a->R);
    std::vector<int32_t>& rules = acRule;
    if (rules.size() < n - lo) rules.resize(n - lo);
    int32_t* rule = rules.data();
    bool first = true;
    for (int kind = 0; kind < 2; kind++) {
      if (!a->has[kind]) continue;
      const uint8_t* hay = (kind ? low : buf) + lo;
      const RevDfa& d = a->rev[kind];
      const int32_t* table = d.table.data();
      uint8_t cls[256];
      memcpy(cls, d.cls, sizeof cls);
      size_t row = 0;
      if (first) {
        for (size_t i = n - lo; i > 0; i--) {
          row = static_cast<size_t>(table[row + 1 + cls[hay[i - 1]]]);
          rule[i - 1] = table[row];
        }
      } else {
        for (size_t i = n - lo; i > 0; i--) {
          row = static_cast<size_t>(table[row + 1 + cls[hay[i - 1]]]);
          rule[i - 1] = std::min(rule[i - 1], table[row]);
        }
      }
      first = false;
    }
    if (first) std::fill(rule, rule + (n - lo), none);
    ruleAt = rule;
    if (final) return;
    tailLo = n - lo > a->maxLen - 1 ? n - (a->maxLen - 1) : lo;
    acUndecided.assign(n - tailLo, none);
    undecidedAt = acUndecided.data();
    for (int kind = 0; kind < 2; kind++) {
      if (!a->has[kind]) continue;
      const uint8_t* hay = kind ? low : buf;
      const FwdTrie& t = a->fwd[kind];
      int32_t u = 0;
      for (size_t i = tailLo; i < n; i++) u = t.Step(u, hay[i]);
      for (; u != 0; u = t.fail[static_cast<size_t>(u)]) {
        const size_t us = static_cast<size_t>(u);
        if (t.sub[us] >= none) continue;
        int32_t& x = undecidedAt[n - static_cast<size_t>(t.depth[us]) - tailLo];
        x = std::min(x, t.sub[us]);
      }
    }
  }

  // The leftmost event at or after `pos` (kNone: none), its rule and whether it is decided.
  int64_t Next(size_t pos, size_t* rule, bool* decided) const {
    const size_t tail = final ? n : tailLo;
    size_t s = std::max(pos, lo);
    // Most positions start nothing: skip them in a tight loop.
    while (s < tail && ruleAt[s - lo] >= none) s++;
    for (; s < n; s++) {
      int32_t r = ruleAt[s - lo];
      bool dec = true;
      if (s >= tail && undecidedAt[s - tailLo] < r) {
        r = undecidedAt[s - tailLo];
        dec = false;
      }
      if (r < none) {
        *rule = static_cast<size_t>(r);
        *decided = dec;
        return static_cast<int64_t>(s);
      }
    }
    return kNone;
  }
};

// The replace agent's scan of literal rules, whole (src/agent/replace.ts Scan.run with EditRun,
// its reference: the tests run both over random inputs). Rules are tried at increasing positions;
// the leftmost match wins, at equal starts the earlier rule; after a match the search goes on at
// its end. A rule with no match left but a suffix of the buffer that is a proper prefix of its
// pattern is undecided there (unless `final`): the scan stops at the leftmost undecided start
// (the hold). Edits are joined (`join`) as EditRun joins them: a match at most mergeGap bytes
// after the open edit's end, the edit spanning at most mergeSpan original bytes, extends it with
// the gap's original bytes and its replacement. Every edit's bytes go to `scratch`.
//
// Arguments: buf, lowered (ASCII-lowered buf, searched by case-insensitive rules; buf itself when
// there are none), pats (the patterns back to back), rules (Int32Array: per rule pattern offset,
// length, ci, output offset, output length), outs (the outputs back to back), flags (1 final,
// 2 join), mergeGap, mergeSpan, res (Int32Array: [edits, matches, hold, scratch bytes used, then
// per edit at, len, from, to]), scratch; then index and any (Many: null/undefined for none, needed
// past 64 rules unless the automata do it all), then the rule set's automata (literalAutomaton;
// flags 4: they scan the whole buffer, Many not asked). Returns 0, or 1 (the same, Many having
// bailed out and the rest done by the automata or rule by rule), -1 (bad arguments), -2 (res too
// small), -3 (scratch too small), -4 (Many bailed out past 64 rules and no automata were given:
// the caller builds them, or has the JS scan do the buffer): the caller sizes res and scratch from
// the buffer's length first.
napi_value ReplaceLiterals(napi_env env, napi_callback_info info) {
  size_t argc = 13;
  napi_value argv[13];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 10) return Int(env, -1);
  const uint8_t *buf, *low, *pats, *outs;
  size_t n, nl, np, no, nr, nres, ns;
  int32_t *rules, *res;
  const uint8_t* sc;
  int32_t flags, gap, span;
  if (!ByteView(env, argv[0], &buf, &n) || !ByteView(env, argv[1], &low, &nl) || nl != n || !ByteView(env, argv[2], &pats, &np) ||
      !Int32View(env, argv[3], &rules, &nr) || nr % 5 != 0 || !ByteView(env, argv[4], &outs, &no) ||
      napi_get_value_int32(env, argv[5], &flags) != napi_ok || napi_get_value_int32(env, argv[6], &gap) != napi_ok ||
      napi_get_value_int32(env, argv[7], &span) != napi_ok || !Int32View(env, argv[8], &res, &nres) || nres < 4 ||
      !ByteView(env, argv[9], &sc, &ns) || n > INT32_MAX) {
    return Int(env, -1);
  }
  uint8_t* scratch = const_cast<uint8_t*>(sc);
  const size_t R = nr / 5;
  for (size_t r = 0; r < R; r++) {
    const int32_t* q = rules + 5 * r;
    if (q[0] < 0 || q[1] <= 0 || static_cast<size_t>(q[0]) + q[1] > np || q[3] < 0 || q[4] < 0 || static_cast<size_t>(q[3]) + q[4] > no) return Int(env, -1);
  }
  const bool final = (flags & 1) != 0;
  const bool join = (flags & 2) != 0;
  // The automata of the rule set (literalAutomaton), when given: they do what Many gives up, or
  // (flags 4) the whole buffer.
  const Automaton* automaton = nullptr;
  napi_valuetype t12 = napi_undefined;
  if (argc >= 13 && napi_typeof(env, argv[12], &t12) == napi_ok && t12 == napi_external) {
    bool ours = false;
    void* data = nullptr;
    if (napi_check_object_type_tag(env, argv[12], &kAutomatonTag, &ours) == napi_ok && ours &&
        napi_get_value_external(env, argv[12], &data) == napi_ok) {
      automaton = static_cast<const Automaton*>(data);
      // Made of this very set: every rule's length and kind (a match's length is the rule's).
      if (automaton->R != R) return Int(env, -1);
      for (size_t r = 0; r < R; r++) {
        if (automaton->lens[r] != rules[5 * r + 1] || automaton->kinds[r] != rules[5 * r + 2]) return Int(env, -1);
      }
    }
  }
  AcScan ac;
  bool useAc = automaton != nullptr && (flags & 4) != 0;
  if (useAc) ac.Prepare(automaton, buf, low, n, 0, final);
  Many many{};
  napi_valuetype t10 = napi_undefined;
  bool useMany = !useAc && argc >= 12 && napi_typeof(env, argv[10], &t10) == napi_ok && t10 == napi_object;
  bool bailed = false;
  if (useMany) {
    int32_t* ix;
    size_t nix, nany;
    const uint8_t* any;
    if (!Int32View(env, argv[10], &ix, &nix) || !ByteView(env, argv[11], &any, &nany) || nany != 65536 || !many.Init(ix, nix, any, rules, pats, R)) return Int(env, -1);
    // Eight bytes hashed per byte of the buffer: ordinary text takes a small part of it (1,000
    // redaction patterns over English, the prefix all of them share repeated: about 4).
    many.budget = (automaton != nullptr ? 2 : 8) * n + 4096;
  } else if (R > 64 && !useAc) {
    return Int(env, -1);
  }
  // Per rule, its next event: start (kNone: none), decided.
  int64_t evStart[64];
  bool evDecided[64];
  bool evSet[64];
  // A rule's near search is set up at its second search in a call (a rule found at most once per
  // segment, the usual case and every small body, costs one memmem).
  Near hs[64];
  bool hsReady[64];
  for (size_t r = 0; r < R && r < 64; r++) evSet[r] = hsReady[r] = false;
  size_t edits = 0, used = 0, matches = 0;
  const size_t maxEdits = (nres - 4) / 4;
  // The open edit (EditRun): original [at, end), its first output, or its joined bytes.
  int64_t at = -1, end = -1;
  int32_t firstOff = 0, firstLen = 0;
  int64_t jlen = -1;
  auto put = [&](const uint8_t* p, size_t k) -> bool {
    if (used + k > ns) return false;
    memcpy(scratch + used, p, k);
    used += k;
    return true;
  };
  size_t from = 0;  // the open joined edit's bytes start here in scratch
  auto close = [&]() -> int {
    if (at < 0) return 0;
    if (edits >= maxEdits) return -2;
    if (jlen < 0) {
      from = used;
      if (!put(outs + firstOff, firstLen)) return -3;
    }
    int32_t* e = res + 4 + 4 * edits++;
    e[0] = static_cast<int32_t>(at);
    e[1] = static_cast<int32_t>(end - at);
    e[2] = static_cast<int32_t>(from);
    e[3] = static_cast<int32_t>(used);
    at = -1;
    return 0;
  };
  int64_t pos = 0;
  int64_t hold = static_cast<int64_t>(n);
  for (;;) {
    int64_t best = kNone;
    size_t bestR = 0;
    if (useAc) {
      bool decided = true;
      best = ac.Next(static_cast<size_t>(pos), &bestR, &decided);
      if (best == kNone || !decided) {
        hold = best == kNone ? static_cast<int64_t>(n) : best;
        break;
      }
    } else if (useMany) {
      bool decided = true;
      best = many.Next(buf, low, n, static_cast<size_t>(pos), final, R, &bestR, &decided);
      if (many.Bailed()) {
        // Hostile input: the rest by the automata from here when given, else rule by rule (the
        // same answers), or past 64 rules the caller builds the automata or has the JS scan do it.
        useMany = false;
        bailed = true;
        if (automaton != nullptr) {
          useAc = true;
          ac.Prepare(automaton, buf, low, n, static_cast<size_t>(pos), final);
        } else if (R > 64) {
          return Int(env, -4);
        }
        continue;
      }
      if (best == kNone || !decided) {
        hold = best == kNone ? static_cast<int64_t>(n) : best;
        break;
      }
    }
    for (size_t r = 0; r < R && !useMany && !useAc; r++) {
      if (!evSet[r] || evStart[r] < pos) {
        const int32_t* q = rules + 5 * r;
        const uint8_t* pat = pats + q[0];
        const size_t m = q[1];
        const uint8_t* hay = q[2] ? low : buf;
        evDecided[r] = true;
        if (!evSet[r]) {
          evSet[r] = true;
          evStart[r] = FindFar(hay, n, pos, pat, m);
        } else {
          if (!hsReady[r]) {
            hs[r].Init(pat, m);
            hsReady[r] = true;
          }
          evStart[r] = hs[r].Find(hay, n, pos);
        }
        if (evStart[r] == kNone && !final) {
          // The longest suffix starting at or after max(pos, n - m + 1) that is a prefix of pat:
          // the KMP automaton over those bytes (linear; a memcmp at each start was quadratic in
          // a long pattern's length). Its state never passes the bytes read, so the failure
          // function is needed only that far.
          const int64_t lo = std::max<int64_t>(pos, static_cast<int64_t>(n) - static_cast<int64_t>(m) + 1);
          const size_t L = std::min<size_t>(m, static_cast<size_t>(static_cast<int64_t>(n) - lo));
          if (L > 0) {
            if (kmpFail.size() < L) kmpFail.resize(L);
            kmpFail[0] = 0;
            for (size_t i = 1, k = 0; i < L; i++) {
              while (k > 0 && pat[i] != pat[k]) k = kmpFail[k - 1];
              if (pat[i] == pat[k]) k++;
              kmpFail[i] = static_cast<int32_t>(k);
            }
            size_t k = 0;
            for (int64_t j = lo; j < static_cast<int64_t>(n); j++) {
              const uint8_t c = hay[j];
              while (k > 0 && pat[k] != c) k = kmpFail[k - 1];
              if (pat[k] == c) k++;
              if (k == m) k = kmpFail[k - 1];  // a whole occurrence: found above, never here
            }
            if (k > 0) {
              evStart[r] = static_cast<int64_t>(n) - static_cast<int64_t>(k);
              evDecided[r] = false;
            }
          }
        }
      }
      if (evStart[r] < best) {
        best = evStart[r];
        bestR = r;
      }
    }
    if (!useMany && !useAc && (best == kNone || !evDecided[bestR])) {
      hold = best == kNone ? static_cast<int64_t>(n) : best;
      break;
    }
    const int32_t* q = rules + 5 * bestR;
    const int64_t start = best, len = q[1];
    matches++;
    if (join && at >= 0 && start - end <= gap && start + len - at <= span) {
      if (jlen < 0) {
        from = used;
        if (!put(outs + firstOff, firstLen)) return Int(env, -3);
        jlen = firstLen;
      }
      if (!put(buf + end, start - end) || !put(outs + q[3], q[4])) return Int(env, -3);
      jlen = used - from;
      end = start + len;
    } else {
      const int c = close();
      if (c < 0) return Int(env, c);
      at = start;
      end = start + len;
      firstOff = q[3];
      firstLen = q[4];
      jlen = -1;
    }
    pos = start + len;
  }
  const int c = close();
  if (c < 0) return Int(env, c);
  res[0] = static_cast<int32_t>(edits);
  res[1] = static_cast<int32_t>(matches);
  res[2] = static_cast<int32_t>(hold);
  res[3] = static_cast<int32_t>(used);
  return Int(env, bailed ? 1 : 0);
}

napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "findAll", NAPI_AUTO_LENGTH, FindAll, nullptr, &fn) == napi_ok) {
    napi_set_named_property(env, exports, "findAll", fn);
  }
  if (napi_create_function(env, "replaceLiterals", NAPI_AUTO_LENGTH, ReplaceLiterals, nullptr, &fn) == napi_ok) {
    napi_set_named_property(env, exports, "replaceLiterals", fn);
  }
  if (napi_create_function(env, "literalAutomaton", NAPI_AUTO_LENGTH, LiteralAutomaton, nullptr, &fn) == napi_ok) {
    napi_set_named_property(env, exports, "literalAutomaton", fn);
  }
  // replaceLiterals takes the one-pass index (Many): literal-search.ts asks before passing it.
  napi_value yes;
  if (napi_get_boolean(env, true, &yes) == napi_ok) napi_set_named_property(env, exports, "many", yes);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
