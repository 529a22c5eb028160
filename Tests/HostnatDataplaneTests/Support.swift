import HostnatAddressing
import Glibc
import HostnatDataplane
import HostnatEngine
import HostnatPackets

let loopback = IPv4Address(127, 0, 0, 1)
let vmIP = IPv4Address(10, 0, 0, 2)
let vm2IP = IPv4Address(10, 0, 0, 3)
let natA = IPv4Address(203, 0, 113, 10)
let natB = IPv4Address(203, 0, 113, 11)
let server = IPv4Address(198, 51, 100, 1)

func bindLoopback(timeout: Duration = .milliseconds(20)) throws -> UDPSocket {
  try UDPSocket(binding: SocketAddress(ip: loopback, port: 0), receiveTimeout: timeout)
}

func vmConfig(id: String = "vm-a", ip: IPv4Address = vmIP, natIP: IPv4Address = natA, ports: Range<Int> = 1024..<1088)
  -> VMConfig
{
  VMConfig(
    id: id, primaryIP: ip, natSourceRanges: [IPv4CIDR(ip, prefixLength: 32)!],
    portBlocks: [PortBlock(natIP: natIP, ports: ports)])
}

func closeAll(_ sockets: UDPSocket...) {
  for s in sockets { s.close() }
}

/// Receives until `count` datagrams arrived or `within` passed (bounded in time and iterations).
func receive(_ socket: UDPSocket, count: Int = 1, within: Duration = .seconds(2)) throws -> [(
  bytes: [UInt8], address: SocketAddress
)] {
  let batch = PacketBatch(capacity: 64)
  var out: [(bytes: [UInt8], address: SocketAddress)] = []
  let deadline = ContinuousClock.now + within
  var rounds = 0
  while out.count < count, ContinuousClock.now < deadline, rounds < 100_000 {
    rounds += 1
    _ = try socket.receive(into: batch)
    out += batch.datagrams()
  }
  return out
}

/// The inner packet of a Geneve datagram and its VNI (nil when not Geneve/IPv4).
func decap(_ datagram: [UInt8]) -> (vni: UInt32, inner: [UInt8])? {
  var copy = datagram
  return copy.withUnsafeMutableBytes { b -> (vni: UInt32, inner: [UInt8])? in
    guard let (vni, hl) = Underlay.parse(b) else { return nil }
    return (vni, Array(b[hl...]))
  }
}

func udpPorts(_ p: ParsedPacket) -> (UInt16, UInt16)? {
  if case .udp(let s, let d, _) = p.transport { return (s, d) }
  return nil
}

/// An emulated Internet that echoes UDP and answers ICMP echo requests.
final class EchoServers: PacketEndpoint {
  var received = 0
  var ticks = 0

  func receive(_ packet: UnsafeRawBufferPointer, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    received += 1
    guard let p = try? PacketParser.parse(Array(packet)) else { return }
    let reply: [UInt8]
    switch p.transport {
    case .udp(let s, let d, _):
      reply = PacketBuilder.udp(source: p.destination, destination: p.source, sourcePort: d, destinationPort: s, payload: [1, 2, 3])
    case .icmpEcho(ICMPType.echoRequest, let id, let seq):
      reply = PacketBuilder.icmpEcho(source: p.destination, destination: p.source, type: ICMPType.echoReply, identifier: id, sequence: seq)
    default:
      return
    }
    reply.withUnsafeBytes { emit($0) }
  }

  func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) { ticks += 1 }
}

/// A VM workload that sends one UDP datagram on its first tick and records what it receives.
final class OneShotWorkload: PacketEndpoint {
  let ip: IPv4Address
  var sent = false
  var received: [[UInt8]] = []

  init(ip: IPv4Address) { self.ip = ip }

  func receive(_ packet: UnsafeRawBufferPointer, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    received.append(Array(packet))
  }

  func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    guard !sent else { return }
    sent = true
    PacketBuilder.udp(source: ip, destination: server, sourcePort: 5000, destinationPort: 7, payload: [9]).withUnsafeBytes { emit($0) }
  }
}

struct NotGeneve: Error {}

/// The parsed inner packet of a Geneve datagram.
func innerPacket(_ datagram: [UInt8]) throws -> ParsedPacket {
  guard let d = decap(datagram) else { throw NotGeneve() }
  return try PacketParser.parse(d.inner)
}
