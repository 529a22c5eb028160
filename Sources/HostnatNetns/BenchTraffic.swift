internal import Glibc
internal import HostnatDataplane
internal import HostnatPackets
internal import Synchronization

// The UDP packet generator and sink of `DataplaneBench`: the same code measures both paths, so
// whatever they cost is the same on each side and the ratio is about the NAT in between.

/// glibc's `struct mmsghdr` (msghdr, then the unsigned length), which Swift's Glibc module does not
/// import (it sits behind _GNU_SOURCE).
struct BenchMMsgHdr {
  var hdr: msghdr
  var len: UInt32
}

/// recvmmsg/sendmmsg looked up at run time, for the same reason.
enum BenchCalls {
  typealias RecvFn = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32, UnsafeMutableRawPointer?) -> Int32
  typealias SendFn = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32) -> Int32
  static let recvmmsg: RecvFn = {
    guard let sym = dlsym(dlopen(nil, RTLD_NOW), "recvmmsg") else { fatalError("libc has no recvmmsg") }
    return unsafeBitCast(sym, to: RecvFn.self)
  }()
  static let sendmmsg: SendFn = {
    guard let sym = dlsym(dlopen(nil, RTLD_NOW), "sendmmsg") else { fatalError("libc has no sendmmsg") }
    return unsafeBitCast(sym, to: SendFn.self)
  }()
  static let waitForOne: Int32 = 0x10000  // MSG_WAITFORONE
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO: cheap enough to read once per batch or per echo).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// A UDP socket opened inside a namespace (it stays there for its life) and used from any thread.
/// Blocking, with a receive timeout so every loop notices its deadline.
final class BenchSocket: Sendable {
  private let fdStore: Atomic<Int32>
  /// The descriptor (-1 once closed).
  var fd: Int32 { fdStore.load(ordering: .relaxed) }

  private init(fd: Int32) { fdStore = Atomic(fd) }
  deinit { close() }

  /// Closes the descriptor (idempotent): the namespace it was opened in can then go away.
  func close() {
    let fd = fdStore.exchange(-1, ordering: .acquiringAndReleasing)
    if fd >= 0 { Glibc.close(fd) }
  }

  /// Opens a socket in `namespace`, binds it to `local` (port 0: any), connects it to `remote`
  /// when given, and sets 4 MiB buffers (SO_*BUFFORCE: the same size on both paths whatever the
  /// namespace's rmem_max) and `receiveTimeout`.
  static func udp(
    in namespace: NetworkNamespace, local: SocketAddressV4, remote: SocketAddressV4? = nil, receiveTimeout: Duration
  ) throws(NetnsError) -> BenchSocket {
    let (fd, error): (Int32, Int32)
    do {
      // errno is per thread: bring it back from the namespace thread with the descriptor.
      (fd, error) = try namespace.run { () -> (Int32, Int32) in
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        return (fd, fd < 0 ? errno : 0)
      }
    } catch let e as NetnsError {
      throw e
    } catch {
      throw NetnsError(.systemCall, "\(error)")
    }
    guard fd >= 0 else { throw NetnsError.system("socket in \(namespace)", error) }
    let s = BenchSocket(fd: fd)
    var size: Int32 = 4 << 20
    for option in [Int32(33) /* SO_RCVBUFFORCE */, Int32(32) /* SO_SNDBUFFORCE */] {
      if setsockopt(fd, SOL_SOCKET, option, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
        // Without CAP_NET_ADMIN: the capped size is still the same on both paths.
        _ = setsockopt(fd, SOL_SOCKET, option == 33 ? SO_RCVBUF : SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
      }
    }
    let (sec, atto) = receiveTimeout.components
    var tv = timeval(tv_sec: Int(sec), tv_usec: max(1, Int(atto / 1_000_000_000_000)))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    try s.call("bind \(local)", local) { Glibc.bind(fd, $0, $1) }
    if let remote { try s.call("connect \(remote)", remote) { Glibc.connect(fd, $0, $1) } }
    return s
  }

  private func call(
    _ what: String, _ address: SocketAddressV4, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32
  ) throws(NetnsError) {
    var sin = address.sockaddr
    let rc = withUnsafePointer(to: &sin) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { throw NetnsError.system(what, errno) }
  }
}

/// An IPv4 address and port for the bench's sockets.
struct SocketAddressV4: Sendable, CustomStringConvertible {
  var ip: IPv4Address
  var port: UInt16
  var sockaddr: sockaddr_in {
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    sin.sin_addr.s_addr = ip.value.bigEndian
    return sin
  }
  var description: String { "\(ip):\(port)" }
}

/// Preallocated recvmmsg/sendmmsg vectors: `count` slots of `slotSize` bytes with their addresses.
/// One thread uses it at a time; nothing is allocated per packet.
final class BenchVectors {
  let count: Int
  let slotSize: Int
  let storage: UnsafeMutableRawPointer
  let iov: UnsafeMutablePointer<iovec>
  let names: UnsafeMutablePointer<sockaddr_in>
  let msgs: UnsafeMutablePointer<BenchMMsgHdr>

  init(count: Int, slotSize: Int) {
    self.count = count
    self.slotSize = slotSize
    storage = .allocate(byteCount: count * slotSize, alignment: 64)
    storage.initializeMemory(as: UInt8.self, repeating: 0, count: count * slotSize)
    iov = .allocate(capacity: count)
    names = .allocate(capacity: count)
    names.initialize(repeating: sockaddr_in(), count: count)
    msgs = .allocate(capacity: count)
    for i in 0..<count {
      iov[i] = iovec(iov_base: storage + i * slotSize, iov_len: slotSize)
      msgs[i] = BenchMMsgHdr(hdr: msghdr(), len: 0)
    }
    resetForReceive()
  }

  deinit {
    storage.deallocate()
    iov.deallocate()
    names.deallocate()
    msgs.deallocate()
  }

  /// Every slot whole again, with room for the source address (recvmmsg overwrites lengths).
  func resetForReceive() {
    for i in 0..<count {
      iov[i].iov_len = slotSize
      msgs[i].hdr = msghdr(
        msg_name: UnsafeMutableRawPointer(names + i), msg_namelen: socklen_t(MemoryLayout<sockaddr_in>.size),
        msg_iov: iov + i, msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0)
    }
  }
}

/// What a sink counted: datagrams and the arrival times of the first and last one.
struct SinkCount: Sendable, Hashable {
  var packets: UInt64
  /// Datagrams of the first batch (they arrived before `firstNanoseconds`, so the rate leaves them out).
  var firstBatch: UInt64
  var firstNanoseconds: UInt64
  var lastNanoseconds: UInt64

  /// Packets per second between the first and the last batch (0 with fewer than two batches).
  var packetsPerSecond: Double {
    guard packets > firstBatch, lastNanoseconds > firstNanoseconds else { return 0 }
    return Double(packets - firstBatch) * 1e9 / Double(lastNanoseconds - firstNanoseconds)
  }
}

/// The server side of one path: a sink counting every datagram on one socket and an echo sending
/// every datagram on another back to its source. One thread each, blocked in recvmmsg when idle
/// (no CPU taken from the path under test), woken by their receive timeout to notice `stop`.
final class BenchServer: Sendable {
  let sink: BenchSocket
  let echo: BenchSocket
  private let packets = Atomic<UInt64>(0)
  private let firstBatch = Atomic<UInt64>(0)
  private let first = Atomic<UInt64>(0)
  private let last = Atomic<UInt64>(0)
  private let threads = Mutex<[BridgeThread]>([])

  init(sink: BenchSocket, echo: BenchSocket) {
    self.sink = sink
    self.echo = echo
  }

  func start() {
    threads.withLock { t in
      guard t.isEmpty else { return }
      t.append(BridgeThread.spawn(name: "hn-bench-sink") { [self] thread in runSink(thread) })
      t.append(BridgeThread.spawn(name: "hn-bench-echo") { [self] thread in runEcho(thread) })
    }
  }

  /// Stops both threads, then closes both sockets.
  func stop() {
    defer {
      sink.close()
      echo.close()
    }
    let running = threads.withLock { t -> [BridgeThread] in
      defer { t = [] }
      return t
    }
    for t in running { t.stop(timeout: .seconds(2)) }
  }

  /// Zeroes the sink's count (call while nothing is sent).
  func resetCount() {
    packets.store(0, ordering: .relaxed)
    firstBatch.store(0, ordering: .relaxed)
    first.store(0, ordering: .relaxed)
    last.store(0, ordering: .relaxed)
  }

  func count() -> SinkCount {
    SinkCount(
      packets: packets.load(ordering: .acquiring), firstBatch: firstBatch.load(ordering: .acquiring),
      firstNanoseconds: first.load(ordering: .acquiring),
      lastNanoseconds: last.load(ordering: .acquiring))
  }

  private func runSink(_ thread: BridgeThread) {
    let v = BenchVectors(count: 256, slotSize: 2048)
    while !thread.shouldStop {
      v.resetForReceive()
      let n = BenchCalls.recvmmsg(sink.fd, UnsafeMutableRawPointer(v.msgs), UInt32(v.count), BenchCalls.waitForOne, nil)
      guard n > 0 else {
        if n < 0, errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR { usleep(1000) }
        continue
      }
      // One timestamp per batch: the batch's datagrams arrived by then.
      let now = monotonicNanoseconds()
      if packets.load(ordering: .relaxed) == 0 {
        first.store(now, ordering: .relaxed)
        firstBatch.store(UInt64(n), ordering: .relaxed)
      }
      last.store(now, ordering: .relaxed)
      packets.add(UInt64(n), ordering: .releasing)
    }
  }

  private func runEcho(_ thread: BridgeThread) {
    let v = BenchVectors(count: 64, slotSize: 2048)
    while !thread.shouldStop {
      v.resetForReceive()
      let n = BenchCalls.recvmmsg(echo.fd, UnsafeMutableRawPointer(v.msgs), UInt32(v.count), BenchCalls.waitForOne, nil)
      guard n > 0 else {
        if n < 0, errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR { usleep(1000) }
        continue
      }
      // Back to each source, same bytes, in one sendmmsg.
      for i in 0..<Int(n) { v.iov[i].iov_len = Int(v.msgs[i].len) }
      _ = BenchCalls.sendmmsg(echo.fd, UnsafeMutableRawPointer(v.msgs), UInt32(n), 0)
    }
  }
}

/// The client side of one path: the generator (sendmmsg batches of one fixed datagram, as fast as
/// the kernel takes them) and the ping-pong timer.
enum BenchClient {
  /// Sends `payload`-byte datagrams on the connected `socket` in batches of `batch` until
  /// `duration` has passed (and at most `maxBatches` calls). Returns how many the kernel took.
  static func blast(_ socket: BenchSocket, payload: Int, batch: Int, duration: Duration, maxBatches: Int = 100_000_000) -> UInt64 {
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, payload), alignment: 16)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0x5A, count: max(1, payload))
    // Every message points at the same bytes: the generator costs one memcpy per packet in the
    // kernel and nothing in user space.
    var iov = iovec(iov_base: buffer, iov_len: payload)
    let msgs = UnsafeMutablePointer<BenchMMsgHdr>.allocate(capacity: batch)
    defer { msgs.deallocate() }
    return withUnsafeMutablePointer(to: &iov) { iovp -> UInt64 in
      for i in 0..<batch {
        msgs[i] = BenchMMsgHdr(
          hdr: msghdr(msg_name: nil, msg_namelen: 0, msg_iov: iovp, msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0),
          len: 0)
      }
      let (s, a) = duration.components
      let deadline = monotonicNanoseconds() &+ UInt64(s) &* 1_000_000_000 &+ UInt64(a / 1_000_000_000)
      var sent: UInt64 = 0
      var calls = 0
      while calls < maxBatches, monotonicNanoseconds() < deadline {
        calls += 1
        let n = BenchCalls.sendmmsg(socket.fd, UnsafeMutableRawPointer(msgs), UInt32(batch), 0)
        if n > 0 {
          sent &+= UInt64(n)
        } else if errno == ENOBUFS || errno == EAGAIN {
          // A full queue on the way out: let whatever drains it run.
          sched_yield()
        }
      }
      return sent
    }
  }

  /// `count` request/response round trips on the connected `socket` (each waits at most the
  /// socket's receive timeout, the whole at most `limit`). Returns the round-trip times in
  /// nanoseconds of the answered ones; a reply is matched by its sequence number, so a late
  /// answer to an earlier request is skipped, not mistaken.
  static func pingPong(_ socket: BenchSocket, count: Int, payload: Int, limit: Duration) -> [UInt64] {
    let size = max(8, payload)
    let out = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
    let into = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 16)
    defer {
      out.deallocate()
      into.deallocate()
    }
    out.initializeMemory(as: UInt8.self, repeating: 0xA5, count: size)
    var rtts: [UInt64] = []
    rtts.reserveCapacity(count)
    let (s, a) = limit.components
    let deadline = monotonicNanoseconds() &+ UInt64(s) &* 1_000_000_000 &+ UInt64(a / 1_000_000_000)
    for seq in 0..<count {
      guard monotonicNanoseconds() < deadline else { break }
      out.storeBytes(of: UInt64(seq), toByteOffset: 0, as: UInt64.self)
      let t0 = monotonicNanoseconds()
      guard Glibc.send(socket.fd, out, size, 0) == size else { continue }
      // A few stale replies at most; each recv is bounded by the receive timeout.
      for _ in 0..<8 {
        let n = recv(socket.fd, into, 2048, 0)
        guard n >= 8 else { break }
        if into.loadUnaligned(fromByteOffset: 0, as: UInt64.self) == UInt64(seq) {
          rtts.append(monotonicNanoseconds() &- t0)
          break
        }
      }
    }
    return rtts
  }
}

/// Nearest-rank percentile (`p` in 0...100) of sorted values, in microseconds; 0 when empty.
func percentileMicroseconds(_ sorted: [UInt64], _ p: Double) -> Double {
  guard !sorted.isEmpty else { return 0 }
  let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
  let index = min(sorted.count - 1, max(0, rank - 1))
  return Double(sorted[index]) / 1000
}
