import HostnatAddressing
import HostnatInternet
import HostnatPackets
import Testing
import HostnatTestSupport

let client = ip("192.0.2.5")
let serverA = ip("203.0.113.10")
let serverC = ip("203.0.113.30")
let ms: UInt64 = 1_000_000

/// A reply as the test sees it: the parsed headers (checksums verified) and its transport payload.
struct Reply {
  var bytes: [UInt8]
  var parsed: ParsedPacket
  var payload: [UInt8]

  var tcp: (sourcePort: UInt16, destinationPort: UInt16, flags: TCPFlags, sequence: UInt32, acknowledgment: UInt32)? {
    if case let .tcp(s, d, f, seq, ack) = parsed.transport { return (s, d, f, seq, ack) }
    return nil
  }
  var udpPorts: (source: UInt16, destination: UInt16)? {
    if case let .udp(s, d, _) = parsed.transport { return (s, d) }
    return nil
  }
}

/// Every emitted packet must parse with valid IP and transport checksums, TTL 64.
func validated(_ bytes: [UInt8]) throws -> Reply {
  let parsed = try PacketParser.parse(bytes, verifyChecksums: true)
  #expect(parsed.ttl == 64)
  let l4 = Array(bytes[parsed.headerLength...])
  let payload: [UInt8]
  switch parsed.transport {
  case .udp: payload = Array(l4[8...])
  case .tcp: payload = Array(l4[(Int(l4[12] >> 4) * 4)...])
  case .icmpEcho, .icmpError: payload = Array(l4[8...])
  }
  return Reply(bytes: bytes, parsed: parsed, payload: payload)
}

extension PacketEndpoint {
  /// Hands one packet in and returns what came out, each validated.
  func deliver(_ packet: [UInt8], now: UInt64) throws -> [Reply] {
    var out: [[UInt8]] = []
    packet.withUnsafeBytes { receive($0, now: now) { out.append(Array($0)) } }
    return try out.map(validated)
  }

  func advance(to now: UInt64) throws -> [Reply] {
    var out: [[UInt8]] = []
    tick(now: now) { out.append(Array($0)) }
    return try out.map(validated)
  }
}

/// A scripted TCP client for driving the server by hand.
struct TestClient {
  var address = client
  var port: UInt16 = 40_000
  var server = serverA
  var serverPort: UInt16 = 7
  var seq: UInt32 = 1_000
  var ack: UInt32 = 0

  func segment(_ flags: TCPFlags, seq: UInt32? = nil, payload: [UInt8] = [], ack: UInt32? = nil) -> [UInt8] {
    PacketBuilder.tcp(
      source: address, destination: server, sourcePort: port, destinationPort: serverPort, flags: flags,
      sequence: seq ?? self.seq, acknowledgment: ack ?? self.ack, payload: payload)
  }

  /// SYN → SYN-ACK → ACK; returns the server's ISN.
  mutating func handshake(_ servers: InternetServers, now: UInt64) throws -> UInt32 {
    let synAck = try servers.deliver(segment(.syn), now: now)
    try #require(synAck.count == 1)
    let t = try #require(synAck[0].tcp)
    #expect(t.flags == [.syn, .ack])
    #expect(t.acknowledgment == seq &+ 1)
    seq &+= 1
    ack = t.sequence &+ 1
    let none = try servers.deliver(segment(.ack), now: now)
    #expect(none.isEmpty)
    return t.sequence
  }
}
