package import Glibc
import HostnatPackets
public import HostnatAddressing
internal import Synchronization

// SocketAddress itself lives in HostnatAddressing (pure); the conversions to the kernel's
// sockaddr_in live here, beside the only code that makes system calls.
extension SocketAddress {
  @inline(__always)
  init(_ sin: sockaddr_in) {
    self.init(ip: IPv4Address(UInt32(bigEndian: sin.sin_addr.s_addr)), port: UInt16(bigEndian: sin.sin_port))
  }

  @inline(__always)
  package var sockaddr: sockaddr_in {
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    sin.sin_addr.s_addr = ip.value.bigEndian
    return sin
  }
}

/// A failed socket call: which call, errno and its text.
public struct SocketError: Error, Sendable, Hashable, CustomStringConvertible {
  public var operation: String
  public var code: Int32
  public var message: String

  public init(_ operation: String, code: Int32) {
    self.operation = operation
    self.code = code
    message = String(cString: strerror(code))
  }

  public var description: String { "\(operation): \(message) (errno \(code))" }
}

/// glibc's `struct mmsghdr`, which Swift's Glibc module does not import (it sits behind _GNU_SOURCE).
/// Same layout: msghdr (56 bytes) then an unsigned int, padded to 64.
package struct MMsgHdr {
  package var hdr: msghdr
  package var len: UInt32

  package init(hdr: msghdr, len: UInt32) {
    self.hdr = hdr
    self.len = len
  }
}

/// recvmmsg/sendmmsg, looked up once at run time for the same reason.
package enum BatchCalls {
  package typealias Fn = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32, UnsafeMutableRawPointer?) -> Int32
  package typealias SendFn = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32) -> Int32
  package static let recvmmsg: Fn = {
    guard let sym = dlsym(dlopen(nil, RTLD_NOW), "recvmmsg") else { fatalError("libc has no recvmmsg") }
    return unsafeBitCast(sym, to: Fn.self)
  }()
  package static let sendmmsg: SendFn = {
    guard let sym = dlsym(dlopen(nil, RTLD_NOW), "sendmmsg") else { fatalError("libc has no sendmmsg") }
    return unsafeBitCast(sym, to: SendFn.self)
  }()
  package static let waitForOne: Int32 = 0x10000  // MSG_WAITFORONE
}

/// A batch of datagrams in preallocated memory: `capacity` slots of `Underlay.maxDatagram` bytes,
/// each with a length and a peer address (source after a receive, destination for a send).
///
/// Slots are reached through their iovecs, so `swapAt` moves a datagram to another index without
/// copying it (a loop compacts the datagrams it forwards to the front, then sends in place).
/// Not synchronized: one thread uses a batch at a time (Sendable only so a loop can own it).
public final class PacketBatch: @unchecked Sendable {
  public static let slotSize = Underlay.maxDatagram
  public let capacity: Int
  /// Datagrams in the batch (set by `UDPSocket.receive`, `append`, or the owner).
  public var count: Int = 0
  let storage: UnsafeMutableRawPointer
  let iov: UnsafeMutablePointer<iovec>
  let names: UnsafeMutablePointer<sockaddr_in>
  let lengths: UnsafeMutablePointer<Int>
  let msgs: UnsafeMutablePointer<MMsgHdr>

  public init(capacity: Int = 64) {
    precondition(capacity > 0 && capacity <= 1024, "PacketBatch capacity must be 1...1024")
    self.capacity = capacity
    storage = .allocate(byteCount: capacity * Self.slotSize, alignment: 64)
    storage.initializeMemory(as: UInt8.self, repeating: 0, count: capacity * Self.slotSize)
    iov = .allocate(capacity: capacity)
    names = .allocate(capacity: capacity)
    names.initialize(repeating: sockaddr_in(), count: capacity)
    lengths = .allocate(capacity: capacity)
    lengths.initialize(repeating: 0, count: capacity)
    msgs = .allocate(capacity: capacity)
    for i in 0..<capacity {
      iov[i] = iovec(iov_base: storage + i * Self.slotSize, iov_len: Self.slotSize)
      msgs[i] = MMsgHdr(hdr: msghdr(), len: 0)
    }
  }

  deinit {
    storage.deallocate()
    iov.deallocate()
    names.deallocate()
    lengths.deallocate()
    msgs.deallocate()
  }

  public var isFull: Bool { count == capacity }

  /// The datagram at `index` (its current length).
  @inline(__always)
  public func packet(at index: Int) -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(start: iov[index].iov_base, count: lengths[index])
  }

  /// The whole slot at `index` (`slotSize` bytes).
  @inline(__always)
  func slot(at index: Int) -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(start: iov[index].iov_base, count: Self.slotSize)
  }

  @inline(__always)
  public func address(at index: Int) -> SocketAddress { SocketAddress(names[index]) }

  @inline(__always)
  public func setAddress(_ address: SocketAddress, at index: Int) { names[index] = address.sockaddr }

  /// Exchanges two datagrams (slot pointers, lengths, addresses) without copying their bytes.
  @inline(__always)
  public func swapAt(_ i: Int, _ j: Int) {
    guard i != j else { return }
    swap(&iov[i], &iov[j])
    swap(&names[i], &names[j])
    swap(&lengths[i], &lengths[j])
  }

  /// Appends a datagram to `address`, copying `bytes`. False when full or the datagram is too big.
  @discardableResult
  public func append(to address: SocketAddress, copying bytes: UnsafeRawBufferPointer) -> Bool {
    guard count < capacity, bytes.count <= Self.slotSize else { return false }
    let i = count
    if let src = bytes.baseAddress { iov[i].iov_base.copyMemory(from: src, byteCount: bytes.count) }
    lengths[i] = bytes.count
    names[i] = address.sockaddr
    count = i + 1
    return true
  }

  /// Appends a Geneve datagram (8-byte header with `vni`, then `inner`) to `address`.
  @discardableResult
  public func appendGeneve(vni: UInt32, inner: UnsafeRawBufferPointer, to address: SocketAddress) -> Bool {
    let total = Geneve.baseHeaderLength + inner.count
    guard count < capacity, total <= Self.slotSize else { return false }
    let i = count
    let s = slot(at: i)
    Underlay.writeHeader(vni: vni, into: s)
    if let src = inner.baseAddress { (s.baseAddress! + Geneve.baseHeaderLength).copyMemory(from: src, byteCount: inner.count) }
    lengths[i] = total
    names[i] = address.sockaddr
    count = i + 1
    return true
  }

  /// Copies of the datagrams (tests and tools).
  public func datagrams() -> [(bytes: [UInt8], address: SocketAddress)] {
    (0..<count).map { (Array(UnsafeRawBufferPointer(packet(at: $0))), address(at: $0)) }
  }
}

/// Outcome of `UDPSocket.send(_:)`.
public struct SendResult: Sendable, Hashable {
  public var sent: Int = 0
  public var failed: Int = 0
  /// errno of the last failure, if any.
  public var lastError: Int32 = 0
}

/// A UDP socket bound to an IPv4 address, with batched receive (recvmmsg) and send (sendmmsg).
/// Receives wait at most `receiveTimeout`, so a loop can notice `stop` and run its timers.
public final class UDPSocket: @unchecked Sendable {
  private let fdStore: Atomic<Int32>
  public let localAddress: SocketAddress

  /// Binds to `address` (port 0 picks a free port; see `localAddress`). Socket buffers are raised to
  /// ~4 MB where the system allows (best effort: bursts of a few thousand datagrams fit).
  public init(binding address: SocketAddress, receiveTimeout: Duration = .milliseconds(50)) throws(SocketError) {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SocketError("socket", code: errno) }
    var size: Int32 = 4 << 20
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    var sin = address.sockaddr
    let rc = withUnsafePointer(to: &sin) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else {
      let e = errno
      Glibc.close(fd)
      throw SocketError("bind \(address)", code: e)
    }
    var bound = sockaddr_in()
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let grc = withUnsafeMutablePointer(to: &bound) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    guard grc == 0 else {
      let e = errno
      Glibc.close(fd)
      throw SocketError("getsockname", code: e)
    }
    localAddress = SocketAddress(bound)
    fdStore = Atomic(fd)
    do {
      try setReceiveTimeout(receiveTimeout)
    } catch {
      Glibc.close(fd)
      throw error
    }
  }

  deinit { close() }

  /// The descriptor (-1 once closed), for socket options the data plane does not set itself.
  package var fd: Int32 { fdStore.load(ordering: .relaxed) }

  /// Longest a `receive` waits for the first datagram.
  public func setReceiveTimeout(_ timeout: Duration) throws(SocketError) {
    let (seconds, attoseconds) = timeout.components
    var tv = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    if tv.tv_sec == 0 && tv.tv_usec == 0 { tv.tv_usec = 1 }  // 0 would mean "block forever"
    guard setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
      throw SocketError("setsockopt SO_RCVTIMEO", code: errno)
    }
  }

  /// Waits up to the receive timeout for one datagram, then takes whatever else is queued, up to the
  /// batch capacity. Returns the count (0 on timeout or signal) and sets `batch.count`.
  public func receive(into batch: PacketBatch) throws(SocketError) -> Int {
    batch.count = 0
    let n = batch.capacity
    for i in 0..<n {
      batch.iov[i].iov_len = PacketBatch.slotSize
      batch.msgs[i].hdr = msghdr(
        msg_name: UnsafeMutableRawPointer(batch.names + i), msg_namelen: socklen_t(MemoryLayout<sockaddr_in>.size),
        msg_iov: batch.iov + i, msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0)
    }
    let got = BatchCalls.recvmmsg(fd, UnsafeMutableRawPointer(batch.msgs), UInt32(n), BatchCalls.waitForOne, nil)
    if got < 0 {
      let e = errno
      if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return 0 }
      throw SocketError("recvmmsg", code: e)
    }
    for i in 0..<Int(got) {
      // A datagram longer than the slot arrives truncated (MSG_TRUNC): count it as empty so the
      // loops reject it instead of reading a partial packet.
      let truncated = batch.msgs[i].hdr.msg_flags & Int32(MSG_TRUNC) != 0
      batch.lengths[i] = truncated ? 0 : Int(batch.msgs[i].len)
    }
    batch.count = Int(got)
    return Int(got)
  }

  /// Sends datagrams 0..<batch.count to their addresses. A datagram the kernel refuses is counted
  /// and skipped; the rest are still sent. Does not change the batch.
  @discardableResult
  public func send(_ batch: PacketBatch) -> SendResult {
    var result = SendResult()
    let total = batch.count
    guard total > 0 else { return result }
    for i in 0..<total {
      batch.iov[i].iov_len = batch.lengths[i]
      batch.msgs[i].hdr = msghdr(
        msg_name: UnsafeMutableRawPointer(batch.names + i), msg_namelen: socklen_t(MemoryLayout<sockaddr_in>.size),
        msg_iov: batch.iov + i, msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0)
    }
    var start = 0
    var attempts = 0
    while start < total && attempts < total * 2 + 4 {
      attempts += 1
      let n = BatchCalls.sendmmsg(fd, UnsafeMutableRawPointer(batch.msgs + start), UInt32(total - start), 0)
      if n > 0 {
        result.sent += Int(n)
        start += Int(n)
      } else {
        let e = errno
        if n < 0 && e == EINTR { continue }
        // sendmmsg reports an error only for the first message it could not send: skip that one.
        result.failed += 1
        result.lastError = n < 0 ? e : EIO
        start += 1
      }
    }
    if start < total {
      result.failed += total - start
    }
    // Receives reset the iov lengths, so leaving them short here is harmless.
    return result
  }

  /// Sends one datagram (tests and control traffic; loops use batches).
  public func send(_ bytes: UnsafeRawBufferPointer, to address: SocketAddress) throws(SocketError) {
    var sin = address.sockaddr
    let n = withUnsafePointer(to: &sin) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard n >= 0 else { throw SocketError("sendto \(address)", code: errno) }
  }

  public func send(_ bytes: [UInt8], to address: SocketAddress) throws(SocketError) {
    let result = bytes.withUnsafeBytes { b in Result { () throws(SocketError) in try send(b, to: address) } }
    try result.get()
  }

  /// Closes the socket (idempotent). Stop loops using it first: a receive in progress ends at its
  /// timeout with an error.
  public func close() {
    let fd = fdStore.exchange(-1, ordering: .acquiringAndReleasing)
    if fd >= 0 { Glibc.close(fd) }
  }
}
