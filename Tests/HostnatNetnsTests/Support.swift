import HostnatAddressing
import Foundation
import Glibc
import HostnatDataplane
import HostnatEngine
import HostnatNetns
import HostnatPackets
import Synchronization
import Testing

// Shared by the namespace tests. Everything a test creates is named with this process's pid and a
// counter, and removed by the test's own `defer` (also when it fails).

/// Nil when namespaces, TUN devices and `ip netns` can be used here (root, Linux, /dev/net/tun).
let netnsUnavailable: String? = NetworkNamespace.unavailableReason()
let netnsAvailable = netnsUnavailable == nil

private let nameCounter = Atomic<Int>(0)

/// "hnt-PID-N-ROLE": unique per run and per call.
func uniqueNamespaceName(_ role: String) -> String {
  let n = nameCounter.add(1, ordering: .relaxed).newValue
  return "hnt-\(getpid())-\(n)-\(role)"
}

let loopback = IPv4Address(127, 0, 0, 1)
let vmAddress = IPv4Address(10, 10, 0, 2)
let natIP = IPv4Address(203, 0, 113, 10)
let natPorts = 1024..<1088
let inetGateway = IPv4Address(192, 0, 2, 1)
let inetServer = IPv4Address(192, 0, 2, 80)

func bindLoopback(timeout: Duration = .milliseconds(20)) throws -> UDPSocket {
  try UDPSocket(binding: SocketAddress(ip: loopback, port: 0), receiveTimeout: timeout)
}

/// Receives Geneve datagrams on `socket` until one passes `accept` or `within` passes (bounded in
/// time and rounds). Returns its VNI and inner packet.
func receiveGeneve(
  _ socket: UDPSocket, within: Duration = .seconds(3), where accept: (UInt32, [UInt8]) -> Bool = { _, _ in true }
) throws -> (vni: UInt32, inner: [UInt8])? {
  let batch = PacketBatch(capacity: 16)
  let deadline = ContinuousClock.now + within
  var rounds = 0
  while ContinuousClock.now < deadline, rounds < 10_000 {
    rounds += 1
    _ = try socket.receive(into: batch)
    for (bytes, _) in batch.datagrams() {
      var copy = bytes
      let decoded = copy.withUnsafeMutableBytes { b -> (UInt32, [UInt8])? in
        guard let (vni, hl) = Underlay.parse(b) else { return nil }
        return (vni, Array(b[hl...]))
      }
      if let (vni, inner) = decoded, accept(vni, inner) { return (vni, inner) }
    }
  }
  return nil
}

// MARK: - Sockets inside namespaces

/// A socket created inside a namespace (it stays there), used from the test's thread. Closed on deinit.
final class NamespaceSocket: @unchecked Sendable {
  let fd: Int32
  init(_ fd: Int32) { self.fd = fd }
  deinit { close(fd) }

  struct Failure: Error, CustomStringConvertible {
    var what: String
    var code: Int32
    var description: String { "\(what): \(String(cString: strerror(code))) (errno \(code))" }
  }

  static func make(in ns: NetworkNamespace, type: Int32, timeout: Duration = .seconds(3)) throws -> NamespaceSocket {
    // errno is per thread: bring it back from the namespace thread with the descriptor.
    let (fd, error) = try ns.run { () -> (Int32, Int32) in
      let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
      return (fd, fd < 0 ? errno : 0)
    }
    guard fd >= 0 else { throw Failure(what: "socket", code: error) }
    let s = NamespaceSocket(fd)
    let (sec, atto) = timeout.components
    var tv = timeval(tv_sec: Int(sec), tv_usec: Int(atto / 1_000_000_000_000))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    return s
  }

  static func udp(in ns: NetworkNamespace) throws -> NamespaceSocket { try make(in: ns, type: Int32(SOCK_DGRAM.rawValue)) }
  static func tcp(in ns: NetworkNamespace) throws -> NamespaceSocket { try make(in: ns, type: Int32(SOCK_STREAM.rawValue)) }

  static func sockaddr(_ ip: IPv4Address, _ port: UInt16) -> sockaddr_in {
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    sin.sin_addr.s_addr = ip.value.bigEndian
    return sin
  }

  private func withAddress<R>(_ ip: IPv4Address, _ port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
    var sin = Self.sockaddr(ip, port)
    return withUnsafePointer(to: &sin) {
      $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
  }

  func bind(_ ip: IPv4Address, _ port: UInt16) throws {
    guard withAddress(ip, port, { Glibc.bind(fd, $0, $1) }) == 0 else { throw Failure(what: "bind \(ip):\(port)", code: errno) }
  }

  func listen() throws {
    guard Glibc.listen(fd, 8) == 0 else { throw Failure(what: "listen", code: errno) }
  }

  func connect(_ ip: IPv4Address, _ port: UInt16) throws {
    guard withAddress(ip, port, { Glibc.connect(fd, $0, $1) }) == 0 else {
      throw Failure(what: "connect \(ip):\(port)", code: errno)
    }
  }

  /// Accepts one connection (waits at most the receive timeout) and its peer.
  func accept() throws -> (NamespaceSocket, IPv4Address, UInt16) {
    var sin = sockaddr_in()
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let c = withUnsafeMutablePointer(to: &sin) {
      $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { Glibc.accept(fd, $0, &len) }
    }
    guard c >= 0 else { throw Failure(what: "accept", code: errno) }
    return (NamespaceSocket(c), IPv4Address(UInt32(bigEndian: sin.sin_addr.s_addr)), UInt16(bigEndian: sin.sin_port))
  }

  func setDontFragment() {
    var value: Int32 = 2  // IP_PMTUDISC_DO
    setsockopt(fd, Int32(IPPROTO_IP), 10 /* IP_MTU_DISCOVER */, &value, socklen_t(MemoryLayout<Int32>.size))
  }

  /// sendto; returns 0 or the errno.
  func send(_ bytes: [UInt8], to ip: IPv4Address, _ port: UInt16) -> Int32 {
    let n = bytes.withUnsafeBytes { b in withAddress(ip, port) { sendto(fd, b.baseAddress, b.count, 0, $0, $1) } }
    return n >= 0 ? 0 : errno
  }

  /// One datagram and its source, or nil after the receive timeout.
  func receiveFrom(max: Int = 65_536) -> (bytes: [UInt8], ip: IPv4Address, port: UInt16)? {
    var buffer = [UInt8](repeating: 0, count: max)
    var sin = sockaddr_in()
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let n = buffer.withUnsafeMutableBytes { b in
      withUnsafeMutablePointer(to: &sin) {
        $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &len) }
      }
    }
    guard n >= 0 else { return nil }
    return (Array(buffer[0..<n]), IPv4Address(UInt32(bigEndian: sin.sin_addr.s_addr)), UInt16(bigEndian: sin.sin_port))
  }

  /// Writes all of `bytes` (stream sockets).
  func writeAll(_ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
      let n = bytes.withUnsafeBytes { b in Glibc.send(fd, b.baseAddress! + offset, b.count - offset, Int32(MSG_NOSIGNAL)) }
      guard n > 0 else { throw Failure(what: "send", code: errno) }
      offset += n
    }
  }

  /// Reads exactly `count` bytes (stream sockets), each read bounded by the receive timeout.
  func readExactly(_ count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var offset = 0
    while offset < count {
      let n = out.withUnsafeMutableBytes { b in recv(fd, b.baseAddress! + offset, count - offset, 0) }
      guard n > 0 else { throw Failure(what: "recv after \(offset) of \(count) bytes", code: n == 0 ? ECONNRESET : errno) }
      offset += n
    }
    return out
  }
}

// MARK: - The whole chain

/// A VM namespace bridged to an in-process agent that NATs 10.10.0.2 to 203.0.113.10 ports
/// 1024..<1088, an in-process edge routing that block back, and an Internet namespace (192.0.2.1/24
/// plus 192.0.2.80) as the edge's uplink, each namespace named uniquely for this run.
func netnsChain() throws -> NATChain {
  try NATChain(
    NATChainLayout(
      vmNamespace: uniqueNamespaceName("vm"), internetNamespace: uniqueNamespaceName("inet"), vmAddress: vmAddress, natIP: natIP,
      natPorts: natPorts, internetAddress: inetGateway, serverAddresses: [inetServer], flowCapacity: 1024))
}

extension NATChain {
  /// Counters of every piece, for failure messages.
  func report() -> String {
    "vm bridge \(vm.bridge.stats())\ninet bridge \(inet.bridge.stats())\nedge \(edge.stats())\nagent \(agent.stats().loop) \(agent.stats().global)"
  }
}
