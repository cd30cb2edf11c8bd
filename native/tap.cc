// tap.cc — the TAP device addon of tapgate (phy/ layer, see docs/ARCHITECTURE.md §1 and §6).
//
// One TapDevice = one file descriptor on /dev/net/tun attached to a TAP interface with
// IFF_TAP | IFF_NO_PI, optionally IFF_VNET_HDR (10-byte struct virtio_net_hdr in front of every
// frame, TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) so GSO frames up to 64 KiB with
// partial checksums come and go).
//
// Reading. The fd is O_NONBLOCK and watched with a libuv uv_poll_t on the Node event loop, so no
// thread is parked per device. When readable, frames are read in a batch (until EAGAIN, the
// frame cap, or until the batch buffer has less than one maximal frame left) into one of
// kReadBuffers preallocated Buffers, packed back to back (each frame start 8-byte aligned); a
// preallocated Uint32Array holds [offset0, length0, offset1, length1, ...] and, last, the index of
// the buffer. All are created once, when the device is opened, and exposed as properties; the JS
// callback receives only the frame count. So a batch costs one JS call and zero allocations. A
// batch goes into the last batch's buffer unless a transmit thread still writes frames from it
// (below), else into the next free one. The price: frames are only valid until the callback
// returns (a later batch overwrites them); a consumer that keeps one must copy. readNow() reads a
// batch synchronously the same way and returns its count instead of calling back (the live
// gateway reads the other device right after writing to it).
//
// Writing. write(buf) / writeBatch(bufs) call write(2) synchronously, or — with the transmit
// thread (`txThread`, TxThread below) — hand large batches to a thread of their own. A TAP write does not
// queue (the frame is handed to netif_rx at once), so it practically never returns EAGAIN; when
// it does (or ENOBUFS), the frame is counted in txDrops and writeBatch stops and counts the rest
// as dropped too (the fd is full, retrying now would only spin). A frame the kernel refuses
// (EINVAL: malformed virtio header, EIO: link down, EBADFD: device gone) is counted in txDrops
// and writeBatch goes on with the next frame. Writes never throw for such per-frame errors.
//
// The transmit thread. A TAP write runs the receiving side's whole stack inside write(2) (bridge,
// veth, the receiver's TCP): under bulk traffic about a third of the gateway's time, on the one
// thread that also reads and rewrites. With `txThread`, a batch of at least kTxAsyncMinBytes is
// copied into a ring (1 MiB, allocated at first use) and written by a thread, so that work
// overlaps the next batch; smaller batches are written at once as before, unless the ring still
// holds frames (then they queue behind them: frames leave in the order they were handed over).
// A full ring makes writeBatch wait for room (waking the thread: a batch larger than the ring
// is written while it is put). The ring is small so that the copy lands in cache: under 8 iperf3
// flows the copy was 14 % of the process's CPU with 4 MiB, 5 % with 1 MiB (perf). A frame of 4 KiB
// or more that lies in a read buffer of a device of the process (forwarded as it came, its
// headers rewritten in place) is not copied at all: the ring holds a reference, and that buffer
// is not read into again until the thread wrote it. The thread counts what it writes and drops
// as the synchronous path does (per frame); close() lets it write what it holds, then joins it.
// Measured: iperf3, 8 flows under a rule, 7.9 → 9.1 Gbit/s (bench/README.md); small frames
// (wrk) stay synchronous, where handing over cost more than it saved.
// Bulk mode. While any device of the process handed a large batch to its thread in the last
// kBulkNs, every device's batches go to its thread whatever their size: under a bulk transfer
// the small batches are the receiver's ACKs going back to the sender, whose stack sends its
// next data inside that write(2) — the other half of the kernel's work, and under 8 iperf3
// flows a quarter of the gateway's time on its one thread (8 flows under a rule: 8.7 → 10.6–11.2
// Gbit/s, bench/README.md). Request/response traffic (wrk) has no large batch and stays
// synchronous.
//
// Errors. open() throws a JS Error with `code`: TAP_NO_TUN (no /dev/net/tun), TAP_PERM (needs
// CAP_NET_ADMIN), TAP_BUSY (name used by a non-TAP device, or a TAP already attached),
// TAP_OFFLOAD (vnet header / offload ioctls refused), TAP_OPEN (anything else). A read error
// while running (the device was deleted: EBADFD, ENODEV, ENXIO, EIO) stops polling and calls
// the error callback with code TAP_GONE (TAP_IO for other errnos): never a crash.

#include <napi.h>
#include <uv.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/if_tun.h>

namespace {

// The largest frame a TAP can hand us: virtio header (10) + Ethernet + 802.1Q (18) + a 64 KiB
// IP packet (a GSO super-frame is bounded by the IPv4 total length, 65535). Rounded up.
constexpr size_t kVnetHdrLen = 10;
constexpr size_t kMaxFrame = 65600;
constexpr uint32_t kDefaultBatchFrames = 64;
constexpr size_t kDefaultBatchBytes = 1 << 20;
// Read buffers per device: a batch is read into one no transmit thread still writes from.
constexpr uint32_t kReadBuffers = 4;
// Frames of at least this size a transmit thread writes from the read buffer they came in (when
// they did); smaller ones are copied into its ring (cheaper than the bookkeeping).
constexpr size_t kZeroCopyMin = 4096;

enum Counter {
  kRxFrames,
  kRxBytes,
  kRxBatches,
  kRxErrors,
  kTxFrames,
  kTxBytes,
  kTxDrops,
  kCounterCount
};

const char* ErrnoName(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENOBUFS: return "ENOBUFS";
    case EBADFD: return "EBADFD";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOTTY: return "ENOTTY";
    default: return "E?";
  }
}

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& msg, int err,
                      const char* syscall) {
  std::string full = msg;
  if (err != 0) {
    full += " (";
    full += syscall;
    full += ": ";
    full += ErrnoName(err);
    full += ", ";
    full += std::strerror(err);
    full += ")";
  }
  Napi::Error e = Napi::Error::New(env, full);
  e.Set("code", Napi::String::New(env, code));
  if (err != 0) {
    e.Set("errno", Napi::Number::New(env, err));
    e.Set("errnoName", Napi::String::New(env, ErrnoName(err)));
    e.Set("syscall", Napi::String::New(env, syscall));
  }
  return e;
}

int IfIoctl(const char* name, unsigned long req, struct ifreq* ifr) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  std::strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
  int rc = ioctl(s, req, ifr);
  int err = rc < 0 ? errno : 0;
  close(s);
  return err;
}

// One write(2) of a frame, again on EINTR: 0 and the bytes written, or the errno.
int WriteFrame(int fd, const uint8_t* data, size_t len, ssize_t* wrote) {
  for (;;) {
    *wrote = write(fd, data, len);
    if (*wrote >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

// A device's read buffer (kReadBuffers each). A frame handed to a transmit thread that lies in
// one (of any device of the process) is written from it rather than copied into the ring: the
// buffer is not read into again until every such frame was written (`refs`).
struct ReadBuf {
  uint8_t* data = nullptr;
  size_t len = 0;
  std::atomic<uint32_t> refs{0};
};

// The read buffers of the process's open devices. Looked up and referenced under one lock, so a
// buffer leaving (its device closing) is never referenced after it left.
class ReadBufs {
 public:
  static void Add(ReadBuf* b) {
    std::lock_guard<std::mutex> lk(mu());
    list().push_back(b);
  }
  static void Remove(ReadBuf* b) {
    std::lock_guard<std::mutex> lk(mu());
    auto& l = list();
    for (size_t i = 0; i < l.size(); i++) {
      if (l[i] == b) {
        l[i] = l.back();
        l.pop_back();
        return;
      }
    }
  }
  // The read buffer holding [p, p + len), one more reference taken; null if none does.
  static ReadBuf* Take(const uint8_t* p, size_t len) {
    std::lock_guard<std::mutex> lk(mu());
    for (ReadBuf* b : list()) {
      if (p >= b->data && p + len <= b->data + b->len) {
        b->refs.fetch_add(1, std::memory_order_relaxed);
        return b;
      }
    }
    return nullptr;
  }

 private:
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::vector<ReadBuf*>& list() {
    static std::vector<ReadBuf*> l;
    return l;
  }
};

// Waits until nothing references `b` (the transmit threads holding its frames write them: they
// wait for nothing but frames to write).
void AwaitUnreferenced(const ReadBuf& b) {
  while (b.refs.load(std::memory_order_acquire) != 0) {
    struct timespec ts = {0, 20'000};
    nanosleep(&ts, nullptr);
  }
}

// One producer (the JS thread), one consumer (the thread). Entries: [u32 length][u32 0][bytes],
// or [u32 length][u32 kRef][frame pointer][ReadBuf pointer] for a frame written from a read
// buffer; 8-byte aligned; one that does not fit before the ring's end is preceded by a wrap mark.
class TxThread {
 public:
  static constexpr size_t kCapacity = 1u << 20;

  // `last_errno`: the device's latest write error, shared with the caller's own writes.
  TxThread(int fd, std::atomic<int>* last_errno) : fd_(fd), last_errno_(last_errno) {}
  ~TxThread() { Stop(); }

  // Frames handed over and not yet written (the JS thread's view).
  bool Busy() const { return tail_.load(std::memory_order_relaxed) != head_.load(std::memory_order_acquire); }

  // The ring and the thread exist (made at first use). False: they could not be made (no memory,
  // no thread: the caller writes itself) or the thread was stopped.
  bool Ready() {
    if (ring_ != nullptr) return !stop_;
    return !failed_ && Begin();
  }

  // Copies one frame (at most kMaxFrame bytes: half the ring, so it always fits once the ring
  // drains) in, waiting for room while the ring is full. False: stopped. Call Ready() first.
  bool Put(const uint8_t* data, size_t len) {
    if (ring_ == nullptr || len > kMaxFrame) return false;
    uint8_t* at = Reserve((8 + len + 7) & ~size_t{7});
    if (at == nullptr) return false;
    const uint32_t hdr[2] = {static_cast<uint32_t>(len), 0};
    std::memcpy(at, hdr, 8);
    std::memcpy(at + 8, data, len);
    Publish();
    return true;
  }

  // One frame written from the read buffer `rb` holding it (the caller took a reference, which
  // the thread drops once it wrote the frame; on false the caller drops it).
  bool PutRef(const uint8_t* data, size_t len, ReadBuf* rb) {
    if (ring_ == nullptr || len > kMaxFrame) return false;
    uint8_t* at = Reserve(kRefEntry);
    if (at == nullptr) return false;
    const uint32_t hdr[2] = {static_cast<uint32_t>(len), kRef};
    std::memcpy(at, hdr, 8);
    std::memcpy(at + 8, &data, sizeof data);
    std::memcpy(at + 16, &rb, sizeof rb);
    Publish();
    return true;
  }

  // After a batch was put: wakes the thread if it sleeps (one futex call per batch at most).
  void Kick() {
    if (!consumer_waiting_.load(std::memory_order_seq_cst)) return;
    std::lock_guard<std::mutex> lk(mu_);
    data_cv_.notify_one();
  }

  // Lets the thread write what it holds, then joins it. Idempotent.
  void Stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    data_cv_.notify_one();
    space_cv_.notify_one();
    if (started_) {
      pthread_join(th_, nullptr);
      started_ = false;
    }
    std::free(ring_);
    ring_ = nullptr;
  }

  // `direct`: of `frames`, those written from a read buffer (not copied into the ring).
  std::atomic<uint64_t> frames{0}, bytes{0}, drops{0}, direct{0};

 private:
  static constexpr uint32_t kWrap = 0xffffffffu;
  static constexpr uint32_t kRef = 1;
  static constexpr size_t kRefEntry = 24;

  // Room for an entry of `need` bytes at the tail (after a wrap mark if it does not fit before
  // the ring's end), waiting for it; null: stopped. Publish() makes it the thread's.
  uint8_t* Reserve(size_t need) {
    const uint64_t t = tail_.load(std::memory_order_relaxed);
    const size_t idx = t % kCapacity;
    const size_t skip = idx + need > kCapacity ? kCapacity - idx : 0;
    if (!WaitRoom(t + skip + need)) return nullptr;
    if (skip != 0) {
      const uint32_t mark[2] = {kWrap, 0};
      std::memcpy(ring_ + idx, mark, 8);
    }
    reserved_ = t + skip + need;
    return ring_ + (t + skip) % kCapacity;
  }

  void Publish() { tail_.store(reserved_, std::memory_order_seq_cst); }

  // pthread rather than std::thread: the addon is built without exceptions, where a failed
  // std::thread (no more threads) would abort the process; this way the device writes itself.
  bool Begin() {
    if (stop_) return false;
    // Uninitialised: pages are touched as the ring is used (an idle device costs no RSS).
    ring_ = static_cast<uint8_t*>(std::malloc(kCapacity));
    if (ring_ != nullptr && pthread_create(&th_, nullptr, &TxThread::Main, this) == 0) {
      started_ = true;
      return true;
    }
    std::free(ring_);
    ring_ = nullptr;
    failed_ = true;
    return false;
  }

  static void* Main(void* self) {
    static_cast<TxThread*>(self)->Run();
    return nullptr;
  }

  bool WaitRoom(uint64_t end) {
    if (end - head_.load(std::memory_order_acquire) <= kCapacity) return true;
    std::unique_lock<std::mutex> lk(mu_);
    producer_waiting_.store(true, std::memory_order_seq_cst);
    // The frames put since the last Kick (a batch larger than the ring) may be all the thread
    // has not seen: it may sleep on an empty ring it last looked at. Wake it, or neither side
    // would ever move again.
    data_cv_.notify_one();
    while (end - head_.load(std::memory_order_seq_cst) > kCapacity && !stop_) {
      space_cv_.wait_for(lk, std::chrono::milliseconds(1));
    }
    producer_waiting_.store(false, std::memory_order_relaxed);
    return !stop_;
  }

  void Run() {
    uint64_t h = head_.load(std::memory_order_relaxed);
    for (;;) {
      uint64_t t = tail_.load(std::memory_order_acquire);
      if (h == t) {
        std::unique_lock<std::mutex> lk(mu_);
        consumer_waiting_.store(true, std::memory_order_seq_cst);
        while ((t = tail_.load(std::memory_order_seq_cst)) == h && !stop_) data_cv_.wait(lk);
        consumer_waiting_.store(false, std::memory_order_relaxed);
        if (h == t) return;  // stopped, and everything written
      }
      while (h != t) {
        const size_t idx = h % kCapacity;
        uint32_t hdr[2];
        std::memcpy(hdr, ring_ + idx, 8);
        if (hdr[0] == kWrap) {
          h += kCapacity - idx;
          continue;
        }
        const size_t len = hdr[0];
        const bool ref = hdr[1] == kRef;
        const uint8_t* data = ring_ + idx + 8;
        ReadBuf* rb = nullptr;
        if (ref) {
          std::memcpy(&data, ring_ + idx + 8, sizeof data);
          std::memcpy(&rb, ring_ + idx + 16, sizeof rb);
        }
        ssize_t r;
        const int err = WriteFrame(fd_, data, len, &r);
        if (rb != nullptr) rb->refs.fetch_sub(1, std::memory_order_release);
        if (err == 0) {
          frames.fetch_add(1, std::memory_order_relaxed);
          bytes.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
          if (ref) direct.fetch_add(1, std::memory_order_relaxed);
        } else {
          drops.fetch_add(1, std::memory_order_relaxed);
          last_errno_->store(err, std::memory_order_relaxed);
        }
        h += ref ? kRefEntry : (8 + len + 7) & ~size_t{7};
        head_.store(h, std::memory_order_seq_cst);
        if (producer_waiting_.load(std::memory_order_seq_cst)) {
          std::lock_guard<std::mutex> lk(mu_);
          space_cv_.notify_one();
        }
      }
    }
  }

  const int fd_;
  std::atomic<int>* const last_errno_;
  uint8_t* ring_ = nullptr;
  std::atomic<uint64_t> head_{0}, tail_{0};
  std::atomic<bool> consumer_waiting_{false}, producer_waiting_{false};
  std::mutex mu_;
  std::condition_variable data_cv_, space_cv_;
  bool stop_ = false;
  bool failed_ = false;
  bool started_ = false;
  pthread_t th_{};
  uint64_t reserved_ = 0;
};

static_assert(((8 + kMaxFrame + 7) & ~size_t{7}) <= TxThread::kCapacity / 2, "a frame must fit the ring once it drains");

// Batches of at least this many bytes go to the transmit thread.
constexpr size_t kTxAsyncMinBytes = 64 * 1024;
// Bulk mode (see the file comment): how long after a large batch every batch goes to a thread.
constexpr int64_t kBulkNs = 20'000'000;
// CLOCK_MONOTONIC time until which bulk mode holds (any device of the process sets it).
std::atomic<int64_t> g_bulk_until_ns{0};

int64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Whether a batch of `total` bytes goes to the thread `tx` (not null): a large one (which starts
// or extends bulk mode), any while the thread holds frames (order), any in bulk mode — if the
// thread could be started (else the caller writes).
bool ToThread(TxThread* tx, size_t total) {
  bool to;
  if (total >= kTxAsyncMinBytes) {
    g_bulk_until_ns.store(MonotonicNs() + kBulkNs, std::memory_order_relaxed);
    to = true;
  } else {
    to = tx->Busy() || MonotonicNs() < g_bulk_until_ns.load(std::memory_order_relaxed);
  }
  return to && tx->Ready();
}

class TapDevice : public Napi::ObjectWrap<TapDevice> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(
        env, "TapDevice",
        {
            InstanceMethod<&TapDevice::Start>("start"),
            InstanceMethod<&TapDevice::Pause>("pause"),
            InstanceMethod<&TapDevice::Write>("write"),
            InstanceMethod<&TapDevice::WriteBatch>("writeBatch"),
            InstanceMethod<&TapDevice::ReadNow>("readNow"),
            InstanceMethod<&TapDevice::Close>("close"),
            InstanceMethod<&TapDevice::Stats>("stats"),
            InstanceMethod<&TapDevice::SetUp>("setUp"),
            InstanceMethod<&TapDevice::SetMtu>("setMtu"),
            InstanceMethod<&TapDevice::GetMtu>("getMtu"),
            InstanceMethod<&TapDevice::RefLoop>("ref"),
            InstanceMethod<&TapDevice::UnrefLoop>("unref"),
        });
    exports.Set("TapDevice", ctor);
    exports.Set("VNET_HDR_LEN", Napi::Number::New(env, kVnetHdrLen));
    exports.Set("MAX_FRAME", Napi::Number::New(env, kMaxFrame));
    return exports;
  }

  // new TapDevice(name, vnetHdr, batchFrames, batchBytes, multiQueue, txThread)
  // multiQueue: IFF_MULTI_QUEUE, one queue of a TAP made multi-queue (`ip tuntap add … multi_queue`);
  // each open attaches one more queue, and the kernel spreads flows over them.
  explicit TapDevice(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TapDevice>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsBoolean()) {
      Napi::TypeError::New(env, "TapDevice(name: string, vnetHdr: boolean, batchFrames?, batchBytes?)")
          .ThrowAsJavaScriptException();
      return;
    }
    std::string name = info[0].As<Napi::String>().Utf8Value();
    vnet_ = info[1].As<Napi::Boolean>().Value();
    if (info.Length() > 2 && info[2].IsNumber()) {
      batch_frames_ = info[2].As<Napi::Number>().Uint32Value();
    }
    if (info.Length() > 3 && info[3].IsNumber()) {
      batch_bytes_ = static_cast<size_t>(info[3].As<Napi::Number>().Int64Value());
    }
    bool multi_queue = info.Length() > 4 && info[4].IsBoolean() && info[4].As<Napi::Boolean>().Value();
    const bool tx_thread = info.Length() > 5 && info[5].IsBoolean() && info[5].As<Napi::Boolean>().Value();
    if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos) {
      Napi::Error e = MakeError(env, "TAP_NAME", "invalid interface name '" + name +
                                "' (1 to 15 characters, no '/')", 0, "");
      e.ThrowAsJavaScriptException();
      return;
    }
    if (batch_frames_ < 1 || batch_frames_ > 4096) batch_frames_ = kDefaultBatchFrames;
    if (batch_bytes_ < kMaxFrame) batch_bytes_ = kMaxFrame;

    fd_ = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) {
      int err = errno;
      if (err == ENOENT || err == ENODEV || err == ENXIO) {
        MakeError(env, "TAP_NO_TUN",
                  "cannot open /dev/net/tun: the tun driver or its device node is missing "
                  "(modprobe tun; mknod /dev/net/tun c 10 200)", err, "open")
            .ThrowAsJavaScriptException();
      } else if (err == EACCES || err == EPERM) {
        MakeError(env, "TAP_PERM",
                  "cannot open /dev/net/tun for TAP '" + name +
                  "': needs CAP_NET_ADMIN: run as root or inside `unshare -r -n` "
                  "(and /dev/net/tun must be readable+writable, mode 0666 is the udev default)",
                  err, "open")
            .ThrowAsJavaScriptException();
      } else {
        MakeError(env, "TAP_OPEN", "cannot open /dev/net/tun", err, "open")
            .ThrowAsJavaScriptException();
      }
      return;
    }

    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_ ? IFF_VNET_HDR : 0) | (multi_queue ? IFF_MULTI_QUEUE : 0);
    if (ioctl(fd_, TUNSETIFF, &ifr) < 0) {
      int err = errno;
      CloseFd();
      if (err == EINVAL) {
        // The kernel refuses an open whose IFF_MULTI_QUEUE differs from how the TAP was made.
        MakeError(env, "TAP_BUSY",
                  "cannot attach TAP '" + name + "': " +
                      (multi_queue ? "it is not multi-queue (create it with `ip tuntap add mode tap name " + name +
                                         " multi_queue`), or the name is used by a non-TAP device"
                                   : "it is multi-queue (attach it with --queues), or the name is used by a non-TAP device"),
                  err, "ioctl(TUNSETIFF)")
            .ThrowAsJavaScriptException();
        return;
      }
      if (err == EPERM || err == EACCES) {
        MakeError(env, "TAP_PERM",
                  "cannot attach TAP '" + name +
                  "': needs CAP_NET_ADMIN: run as root or inside `unshare -r -n`",
                  err, "ioctl(TUNSETIFF)")
            .ThrowAsJavaScriptException();
      } else if (err == EBUSY) {
        MakeError(env, "TAP_BUSY",
                  "cannot attach TAP '" + name +
                  "': the name is used by a non-TAP device (or a TUN), or the TAP is already "
                  "attached by another process",
                  err, "ioctl(TUNSETIFF)")
            .ThrowAsJavaScriptException();
      } else {
        MakeError(env, "TAP_OPEN", "cannot attach TAP '" + name + "'", err, "ioctl(TUNSETIFF)")
            .ThrowAsJavaScriptException();
      }
      return;
    }
    name_ = ifr.ifr_name;  // the kernel may have expanded a pattern like "tap%d"
    if (tx_thread) tx_ = new TxThread(fd_, &last_tx_errno_);

    // Offloads live on the device, not on the fd: a persistent TAP keeps what its previous
    // user set. Without a vnet header, TSO/CSUM offload MUST be off or the kernel would hand us
    // GSO super-frames with partial checksums and no header to say so. So always set them.
    unsigned int offload = vnet_ ? (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) : 0;
    if (vnet_) {
      int sz = static_cast<int>(kVnetHdrLen);
      if (ioctl(fd_, TUNSETVNETHDRSZ, &sz) < 0) {
        int err = errno;
        CloseFd();
        MakeError(env, "TAP_OFFLOAD", "cannot set the virtio-net header size on '" + name_ + "'",
                  err, "ioctl(TUNSETVNETHDRSZ)")
            .ThrowAsJavaScriptException();
        return;
      }
    }
    if (ioctl(fd_, TUNSETOFFLOAD, offload) < 0) {
      int err = errno;
      CloseFd();
      MakeError(env, "TAP_OFFLOAD", "cannot set offloads on '" + name_ + "'", err,
                "ioctl(TUNSETOFFLOAD)")
          .ThrowAsJavaScriptException();
      return;
    }

    // The batch buffers and the offsets array live in the JS heap (so no external-buffer
    // restrictions apply) and are never reallocated: their backing stores do not move. The
    // offsets array's last element is the index of the buffer the last batch was read into.
    Napi::Array batches = Napi::Array::New(env, kReadBuffers);
    for (uint32_t i = 0; i < kReadBuffers; i++) {
      Napi::Buffer<uint8_t> b = Napi::Buffer<uint8_t>::New(env, batch_bytes_);
      bufs_[i].data = b.Data();
      bufs_[i].len = batch_bytes_;
      batches.Set(i, b);
      // Each buffer held itself (not only through the array JS could change): read(2) and the
      // transmit threads use its memory for as long as the device lives.
      buf_refs_[i] = Napi::Persistent(b.As<Napi::Object>());
    }
    Napi::Uint32Array offsets = Napi::Uint32Array::New(env, 2 * batch_frames_ + 1);
    offsets_ = offsets.Data();
    Napi::Object self = info.This().As<Napi::Object>();
    self.Set("name", Napi::String::New(env, name_));
    self.Set("vnetHdrLen", Napi::Number::New(env, vnet_ ? kVnetHdrLen : 0));
    self.Set("batches", batches);
    self.Set("offsets", offsets);
    self.Set("batchFrames", Napi::Number::New(env, batch_frames_));
    offsets_ref_ = Napi::Persistent(offsets.As<Napi::Object>());
    for (ReadBuf& b : bufs_) ReadBufs::Add(&b);
    registered_ = true;

    env_ = env;
    napi_add_env_cleanup_hook(env, &TapDevice::EnvCleanup, this);
    cleanup_hook_ = true;
  }

  ~TapDevice() override {
    if (cleanup_hook_) napi_remove_env_cleanup_hook(env_, &TapDevice::EnvCleanup, this);
    pinned_ = false;  // the wrapper is being destroyed: no reference left to drop
    Shutdown();
    delete async_ctx_;
  }

 private:
  // start(onFrames: (count) => void, onError: (err) => void)
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) return ThrowClosed(env);
    if (info.Length() < 2 || !info[0].IsFunction() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "start(onFrames, onError)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    on_frames_ = Napi::Persistent(info[0].As<Napi::Function>());
    on_error_ = Napi::Persistent(info[1].As<Napi::Function>());
    if (!async_ctx_) async_ctx_ = new Napi::AsyncContext(env, "TapDevice");
    if (poll_ == nullptr) {
      uv_loop_t* loop = nullptr;
      if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
        Napi::Error::New(env, "cannot get the libuv loop").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      poll_ = new uv_poll_t;
      int rc = uv_poll_init(loop, poll_, fd_);
      if (rc != 0) {
        delete poll_;
        poll_ = nullptr;
        MakeError(env, "TAP_IO", "uv_poll_init failed on '" + name_ + "'", -rc, "uv_poll_init")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
      poll_->data = this;
      if (!loop_ref_) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    }
    if (!polling_) {
      int rc = uv_poll_start(poll_, UV_READABLE, &TapDevice::OnPoll);
      if (rc != 0) {
        MakeError(env, "TAP_IO", "uv_poll_start failed on '" + name_ + "'", -rc, "uv_poll_start")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
      polling_ = true;
      if (!pinned_) {
        Ref();  // a polling device must not be collected while the kernel may deliver frames
        pinned_ = true;
      }
    }
    return env.Undefined();
  }

  // pause(): stop reading (frames queue in the kernel, then the TAP's txqueue drops them).
  Napi::Value Pause(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr && polling_) {
      uv_poll_stop(poll_);
      polling_ = false;
    }
    return info.Env().Undefined();
  }

  static void OnPoll(uv_poll_t* handle, int status, int /*events*/) {
    TapDevice* self = static_cast<TapDevice*>(handle->data);
    if (self == nullptr || self->fd_ < 0) return;
    // libuv reports EPOLLERR (what a deleted TAP raises) as UV_EBADF and stops the handle;
    // a read then tells the real reason (EBADFD), so read first and fall back to the status.
    if (status < 0) self->polling_ = false;
    uint32_t n = 0;
    bool failed = self->ReadBatch(true, &n);
    if (status < 0 && !failed && self->fd_ >= 0) self->Fail(-status, "poll");
  }

  // readNow(): number. Reads a batch at once, without waiting for the event loop, into the same
  // buffer and offsets the poll callback uses, and returns the frame count (0: nothing ready)
  // instead of calling back: the caller processes `batch`/`offsets` itself. The live gateway
  // uses it right after writing to the other device, when an answer is likely already queued
  // (a TAP write runs the receiver's stack inside write(2)): that answer is handled in the same
  // JS call, without an epoll round trip and a second entry into JS. A read error is reported
  // through the error callback as in polling (and 0 returned).
  Napi::Value ReadNow(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) return ThrowClosed(env);
    uint32_t n = 0;
    ReadBatch(false, &n);
    return Napi::Number::New(env, n);
  }

  // Reads until EAGAIN or the batch is full; `*count` = frames read. With `call_js` the frame
  // callback gets them. Returns true when a read error was reported (Fail called).
  bool ReadBatch(bool call_js, uint32_t* count) {
    const uint32_t at = NextReadBuf();
    uint8_t* const batch_ = bufs_[at].data;
    size_t off = 0;
    uint32_t n = 0;
    int err = 0;
    uint64_t bytes = 0;
    while (n < batch_frames_ && batch_bytes_ - off >= kMaxFrame) {
      ssize_t r = read(fd_, batch_ + off, kMaxFrame);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        err = errno;
        break;
      }
      if (r == 0) break;
      offsets_[2 * n] = static_cast<uint32_t>(off);
      offsets_[2 * n + 1] = static_cast<uint32_t>(r);
      n++;
      bytes += static_cast<uint64_t>(r);
      off += (static_cast<size_t>(r) + 7) & ~static_cast<size_t>(7);
    }
    *count = n;
    if (n > 0) {
      offsets_[2 * batch_frames_] = at;
      counters_[kRxFrames] += n;
      counters_[kRxBytes] += bytes;
      counters_[kRxBatches] += 1;
      if (call_js) {
        Napi::HandleScope scope(env_);
        CallJs(on_frames_, {Napi::Number::New(env_, n)});
      }
    }
    if (err != 0 && fd_ >= 0) {
      Fail(err, "read");
      return true;
    }
    return false;
  }

  // The read buffer the next batch goes into: the last one when no transmit thread still writes
  // from it (hot in the cache), else the next free one, else the next one once it is free.
  uint32_t NextReadBuf() {
    for (uint32_t k = 0; k < kReadBuffers; k++) {
      const uint32_t i = (cur_ + k) % kReadBuffers;
      if (bufs_[i].refs.load(std::memory_order_acquire) == 0) return cur_ = i;
    }
    cur_ = (cur_ + 1) % kReadBuffers;
    AwaitUnreferenced(bufs_[cur_]);
    return cur_;
  }

  // Call into JS from a libuv callback: MakeCallback runs the microtask/nextTick queues after
  // the call; a JS exception becomes an 'uncaughtException' (like a throwing event listener).
  void CallJs(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) {
    if (fn.IsEmpty()) return;
    // Hold a reference across the call: JS may close() and drop the device inside it.
    Ref();
    Napi::Object recv = Value();
    napi_value result;
    napi_status st = napi_make_callback(env_, async_ctx_ ? static_cast<napi_async_context>(*async_ctx_) : nullptr,
                                        recv, fn.Value(), args.size(), args.begin(), &result);
    if (st != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env_, &pending);
      if (pending) {
        napi_value exc;
        napi_get_and_clear_last_exception(env_, &exc);
        napi_fatal_exception(env_, exc);
      }
    }
    Unref();
  }

  void Fail(int err, const char* syscall) {
    counters_[kRxErrors] += 1;
    if (poll_ != nullptr && polling_) {
      uv_poll_stop(poll_);
      polling_ = false;
    }
    bool gone = err == EBADFD || err == ENODEV || err == ENXIO || err == EIO || err == EBADF;
    Napi::HandleScope scope(env_);
    Napi::Error e = MakeError(env_, gone ? "TAP_GONE" : "TAP_IO",
                              gone ? "TAP '" + name_ + "' vanished (deleted or detached)"
                                   : "read error on TAP '" + name_ + "'",
                              err, syscall);
    e.Set("device", Napi::String::New(env_, name_));
    CallJs(on_error_, {e.Value()});
  }

  static bool WriteOne(TapDevice* self, const uint8_t* data, size_t len, int* err) {
    ssize_t r;
    *err = WriteFrame(self->fd_, data, len, &r);
    if (*err == 0) {
      self->counters_[kTxFrames] += 1;
      self->counters_[kTxBytes] += static_cast<uint64_t>(r);
      return true;
    }
    self->counters_[kTxDrops] += 1;
    self->last_tx_errno_ = *err;
    return false;
  }

  // One frame to the transmit thread (behind what it holds); false: dropped, counted (larger
  // than any frame a TAP takes: EMSGSIZE).
  bool Queue(const uint8_t* data, size_t len) {
    ReadBuf* rb = len >= kZeroCopyMin && len <= kMaxFrame ? ReadBufs::Take(data, len) : nullptr;
    if (rb != nullptr ? tx_->PutRef(data, len, rb) : tx_->Put(data, len)) return true;
    if (rb != nullptr) rb->refs.fetch_sub(1, std::memory_order_release);
    counters_[kTxDrops] += 1;
    if (len > kMaxFrame) last_tx_errno_ = EMSGSIZE;
    return false;
  }

  static bool AsBytes(Napi::Value v, const uint8_t** data, size_t* len) {
    if (!v.IsTypedArray()) return false;
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_uint8_array) return false;
    Napi::Uint8Array u8 = ta.As<Napi::Uint8Array>();
    *data = u8.Data();
    *len = u8.ByteLength();
    return true;
  }

  // write(frame: Uint8Array): boolean
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) return ThrowClosed(env);
    const uint8_t* data;
    size_t len;
    if (info.Length() < 1 || !AsBytes(info[0], &data, &len)) {
      Napi::TypeError::New(env, "write(frame: Uint8Array)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (tx_ != nullptr && ToThread(tx_, len)) {
      // Behind the frames the thread still holds, or bulk mode.
      const bool ok = Queue(data, len);
      tx_->Kick();
      return Napi::Boolean::New(env, ok);
    }
    int err;
    return Napi::Boolean::New(env, WriteOne(this, data, len, &err));
  }

  // writeBatch(frames: Uint8Array[]): number written
  Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) return ThrowClosed(env);
    if (info.Length() < 1 || !info[0].IsArray()) {
      Napi::TypeError::New(env, "writeBatch(frames: Uint8Array[])").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (in_batch_) {
      Napi::TypeError::New(env, "writeBatch: called again while collecting a batch").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Array arr = info[0].As<Napi::Array>();
    uint32_t n = arr.Length();
    // The elements first (a getter may run JS: another writeBatch is refused, a buffer it
    // detaches is seen below), then their bytes, with no JS running until they are written.
    in_batch_ = true;
    values_.clear();
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value v = arr.Get(i);
      if (env.IsExceptionPending()) {
        in_batch_ = false;
        return env.Undefined();
      }
      values_.push_back(v);
    }
    in_batch_ = false;
    views_.clear();
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
      const uint8_t* data;
      size_t len;
      if (!AsBytes(Napi::Value(env, values_[i]), &data, &len)) {
        Napi::TypeError::New(env, "writeBatch: element " + std::to_string(i) + " is not a Uint8Array")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
      views_.push_back({data, len});
      total += len;
    }
    uint32_t written = 0;
    if (tx_ != nullptr && ToThread(tx_, total)) {
      for (const auto& v : views_) written += Queue(v.first, v.second) ? 1 : 0;
      tx_->Kick();
      return Napi::Number::New(env, written);
    }
    for (uint32_t i = 0; i < n; i++) {
      int err;
      if (WriteOne(this, views_[i].first, views_[i].second, &err)) {
        written++;
      } else if (err == EAGAIN || err == ENOBUFS) {
        counters_[kTxDrops] += n - i - 1;  // the fd is full: the rest of the batch is dropped
        break;
      }
    }
    return Napi::Number::New(env, written);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("rxFrames", Napi::Number::New(env, static_cast<double>(counters_[kRxFrames])));
    o.Set("rxBytes", Napi::Number::New(env, static_cast<double>(counters_[kRxBytes])));
    o.Set("rxBatches", Napi::Number::New(env, static_cast<double>(counters_[kRxBatches])));
    o.Set("rxErrors", Napi::Number::New(env, static_cast<double>(counters_[kRxErrors])));
    // A closed device's thread's counts were folded into its own (CloseFd).
    const TxThread* tx = tx_;
    const uint64_t running = tx != nullptr ? tx->frames.load() : 0;
    o.Set("txFrames", Napi::Number::New(env, static_cast<double>(counters_[kTxFrames] + running)));
    o.Set("txBytes", Napi::Number::New(env, static_cast<double>(counters_[kTxBytes] + (tx != nullptr ? tx->bytes.load() : 0))));
    o.Set("txDrops", Napi::Number::New(env, static_cast<double>(counters_[kTxDrops] + (tx != nullptr ? tx->drops.load() : 0))));
    o.Set("txThreadFrames", Napi::Number::New(env, static_cast<double>(thread_frames_ + running)));
    o.Set("txThreadDirectFrames", Napi::Number::New(env, static_cast<double>(direct_frames_ + (tx != nullptr ? tx->direct.load() : 0))));
    const int last = last_tx_errno_.load();
    if (last != 0) o.Set("lastTxError", Napi::String::New(env, ErrnoName(last)));
    return o;
  }

  // setUp(up: boolean): SIOCSIFFLAGS IFF_UP on this device (in the caller's network namespace).
  Napi::Value SetUp(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) return ThrowClosed(env);
    bool up = info.Length() < 1 || info[0].ToBoolean().Value();
    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    int err = IfIoctl(name_.c_str(), SIOCGIFFLAGS, &ifr);
    if (err == 0) {
      if (up) ifr.ifr_flags |= IFF_UP;
      else ifr.ifr_flags &= ~IFF_UP;
      err = IfIoctl(name_.c_str(), SIOCSIFFLAGS, &ifr);
    }
    if (err != 0) ThrowIfErr(env, err, "cannot set link state of '" + name_ + "'", "ioctl(SIOCSIFFLAGS)");
    return env.Undefined();
  }

  Napi::Value SetMtu(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) return ThrowClosed(env);
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(env, "setMtu(mtu: number)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    ifr.ifr_mtu = info[0].As<Napi::Number>().Int32Value();
    int err = IfIoctl(name_.c_str(), SIOCSIFMTU, &ifr);
    if (err != 0) ThrowIfErr(env, err, "cannot set the MTU of '" + name_ + "'", "ioctl(SIOCSIFMTU)");
    return env.Undefined();
  }

  Napi::Value GetMtu(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    int err = IfIoctl(name_.c_str(), SIOCGIFMTU, &ifr);
    if (err != 0) {
      ThrowIfErr(env, err, "cannot read the MTU of '" + name_ + "'", "ioctl(SIOCGIFMTU)");
      return env.Undefined();
    }
    return Napi::Number::New(env, ifr.ifr_mtu);
  }

  Napi::Value RefLoop(const Napi::CallbackInfo& info) {
    loop_ref_ = true;
    if (poll_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }

  Napi::Value UnrefLoop(const Napi::CallbackInfo& info) {
    loop_ref_ = false;
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  void ThrowIfErr(Napi::Env env, int err, const std::string& msg, const char* syscall) {
    const char* code = (err == EPERM || err == EACCES) ? "TAP_PERM"
                       : (err == ENODEV || err == ENXIO) ? "TAP_GONE"
                                                         : "TAP_IO";
    MakeError(env, code, msg, err, syscall).ThrowAsJavaScriptException();
  }

  Napi::Value ThrowClosed(Napi::Env env) {
    MakeError(env, "TAP_CLOSED", "TAP '" + name_ + "' is closed", 0, "").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // Stop polling, release the handle and the fd. Idempotent. The fd may be closed right after
  // uv_close (libuv docs); the handle memory is freed in the close callback.
  void Shutdown() {
    if (poll_ != nullptr) {
      poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
      polling_ = false;
    }
    CloseFd();
    if (pinned_) {
      pinned_ = false;
      Unref();
    }
  }

  void CloseFd() {
    if (tx_ != nullptr) {
      tx_->Stop();  // writes what it holds first
      // Its counts stay the device's: counters never go back at close.
      const uint64_t frames = tx_->frames.load();
      counters_[kTxFrames] += frames;
      counters_[kTxBytes] += tx_->bytes.load();
      counters_[kTxDrops] += tx_->drops.load();
      thread_frames_ += frames;
      direct_frames_ += tx_->direct.load();
      delete tx_;
      tx_ = nullptr;
    }
    if (registered_) {
      // No thread may write from the read buffers once they may be freed: none takes one now,
      // and those that hold frames from them write them first.
      registered_ = false;
      for (ReadBuf& b : bufs_) ReadBufs::Remove(&b);
      for (const ReadBuf& b : bufs_) AwaitUnreferenced(b);
    }
    if (fd_ >= 0) {
      close(fd_);
      fd_ = -1;
    }
  }

  static void EnvCleanup(void* arg) {
    TapDevice* self = static_cast<TapDevice*>(arg);
    self->cleanup_hook_ = false;
    if (self->poll_ != nullptr) {
      self->poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(self->poll_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      self->poll_ = nullptr;
    }
    self->CloseFd();
  }

  napi_env env_ = nullptr;
  int fd_ = -1;
  bool vnet_ = false;
  std::string name_;
  uint32_t batch_frames_ = kDefaultBatchFrames;
  size_t batch_bytes_ = kDefaultBatchBytes;
  ReadBuf bufs_[kReadBuffers];
  uint32_t cur_ = 0;
  bool registered_ = false;
  uint32_t* offsets_ = nullptr;
  Napi::ObjectReference buf_refs_[kReadBuffers];
  Napi::ObjectReference offsets_ref_;
  Napi::FunctionReference on_frames_;
  Napi::FunctionReference on_error_;
  Napi::AsyncContext* async_ctx_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  bool polling_ = false;
  bool pinned_ = false;
  bool loop_ref_ = true;
  bool cleanup_hook_ = false;
  uint64_t counters_[kCounterCount] = {};
  // The latest write error, of this thread's writes or the transmit thread's.
  std::atomic<int> last_tx_errno_{0};
  uint64_t thread_frames_ = 0;
  uint64_t direct_frames_ = 0;
  TxThread* tx_ = nullptr;
  bool in_batch_ = false;
  std::vector<napi_value> values_;
  std::vector<std::pair<const uint8_t*, size_t>> views_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) { return TapDevice::Init(env, exports); }

}  // namespace

NODE_API_MODULE(tap, Init)
