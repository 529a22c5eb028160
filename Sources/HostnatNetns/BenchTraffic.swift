import HostnatAddressing
internal import Glibc
internal import HostnatDataplane
internal import HostnatPackets
internal import Synchronization

// The UDP packet generator and sink of `DataplaneBench`: the same code measures both paths, so
// whatever they cost is the same on each side and the ratio is about the NAT in between.

/// CLOCK_MONOTONIC in nanoseconds (vDSO: cheap enough to read once per batch or per echo).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// A data-plane UDP socket opened inside `namespace` (it stays there for its life) and bound to
/// `local`, connected to `remote` when given, with 4 MiB buffers forced (SO_*BUFFORCE: the same
/// size on both paths whatever the namespace's rmem_max).
func benchSocket(
  in namespace: NetworkNamespace, local: SocketAddress, remote: SocketAddress? = nil, receiveTimeout: Duration
) throws(NetnsError) -> UDPSocket {
  let socket: UDPSocket
  do {
    socket = try namespace.run { try UDPSocket(binding: local, receiveTimeout: receiveTimeout) }
  } catch let e as NetnsError {
    throw e
  } catch let e as SocketError {
    throw NetnsError(.systemCall, "\(e) in \(namespace)", errno: e.code)
  } catch {
    throw NetnsError(.systemCall, "\(error)")
  }
  let fd = socket.fd
  var size: Int32 = 4 << 20
  for option in [Int32(33) /* SO_RCVBUFFORCE */, Int32(32) /* SO_SNDBUFFORCE */] {
    if setsockopt(fd, SOL_SOCKET, option, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
      // Without CAP_NET_ADMIN: the capped size is still the same on both paths.
      _ = setsockopt(fd, SOL_SOCKET, option == 33 ? SO_RCVBUF : SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
  }
  if let remote {
    var sin = remote.sockaddr
    let rc = withUnsafePointer(to: &sin) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else {
      let e = errno
      socket.close()
      throw NetnsError.system("connect \(remote)", e)
    }
  }
  return socket
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
  let sink: UDPSocket
  let echo: UDPSocket
  private let packets = Atomic<UInt64>(0)
  private let firstBatch = Atomic<UInt64>(0)
  private let first = Atomic<UInt64>(0)
  private let last = Atomic<UInt64>(0)
  private let sinkLoop = LoopHandle()
  private let echoLoop = LoopHandle()

  init(sink: UDPSocket, echo: UDPSocket) {
    self.sink = sink
    self.echo = echo
  }

  func start() {
    sinkLoop.start(name: "hn-bench-sink") { [self] thread in runSink(thread) }
    echoLoop.start(name: "hn-bench-echo") { [self] thread in runEcho(thread) }
  }

  /// Stops both threads, then closes both sockets.
  func stop() {
    defer {
      sink.close()
      echo.close()
    }
    sinkLoop.stop(timeout: .seconds(2))
    echoLoop.stop(timeout: .seconds(2))
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

  private func runSink(_ thread: LoopThread) {
    let batch = PacketBatch(capacity: 256)
    while !thread.shouldStop {
      let n: Int
      do {
        n = try sink.receive(into: batch)
      } catch {
        break  // closed under us
      }
      guard n > 0 else { continue }
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

  private func runEcho(_ thread: LoopThread) {
    let batch = PacketBatch(capacity: 64)
    while !thread.shouldStop {
      do {
        // Back to each source, same bytes, in one sendmmsg.
        if try echo.receive(into: batch) > 0 { echo.send(batch) }
      } catch {
        break
      }
    }
  }
}

/// The client side of one path: the generator (sendmmsg batches of one fixed datagram, as fast as
/// the kernel takes them) and the ping-pong timer.
enum BenchClient {
  /// Sends `payload`-byte datagrams on the connected `socket` in batches of `batch` until
  /// `duration` has passed (and at most `maxBatches` calls). Returns how many the kernel took.
  static func blast(_ socket: UDPSocket, payload: Int, batch: Int, duration: Duration, maxBatches: Int = 100_000_000) -> UInt64 {
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, payload), alignment: 16)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0x5A, count: max(1, payload))
    // Every message points at the same bytes: the generator costs one memcpy per packet in the
    // kernel and nothing in user space.
    var iov = iovec(iov_base: buffer, iov_len: payload)
    let msgs = UnsafeMutablePointer<MMsgHdr>.allocate(capacity: batch)
    defer { msgs.deallocate() }
    return withUnsafeMutablePointer(to: &iov) { iovp -> UInt64 in
      for i in 0..<batch {
        msgs[i] = MMsgHdr(
          hdr: msghdr(msg_name: nil, msg_namelen: 0, msg_iov: iovp, msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0),
          len: 0)
      }
      let (s, a) = duration.components
      let deadline = monotonicNanoseconds() &+ UInt64(s) &* 1_000_000_000 &+ UInt64(a / 1_000_000_000)
      var sent: UInt64 = 0
      var calls = 0
      while calls < maxBatches, monotonicNanoseconds() < deadline {
        calls += 1
        let n = BatchCalls.sendmmsg(socket.fd, UnsafeMutableRawPointer(msgs), UInt32(batch), 0)
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
  static func pingPong(_ socket: UDPSocket, count: Int, payload: Int, limit: Duration) -> [UInt64] {
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
