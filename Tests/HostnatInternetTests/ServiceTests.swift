import HostnatAddressing
import Foundation
import HostnatInternet
import HostnatPackets
import HostnatTestSupport
import Testing

@Suite struct ServiceTests {
  let servers = InternetServers(servers: InternetServers.labDefault)

  @Test func udpEchoRepliesWithSamePayloadSwappedEndpoints() throws {
    let payload = Array("hello, echo".utf8)
    let request = PacketBuilder.udp(
      source: client, destination: serverA, sourcePort: 40_000, destinationPort: 7, payload: payload)
    let replies = try servers.deliver(request, now: 0)
    try #require(replies.count == 1)
    // Byte-identical to what the reference builder produces for the swapped datagram.
    #expect(
      replies[0].bytes
        == PacketBuilder.udp(source: serverA, destination: client, sourcePort: 7, destinationPort: 40_000, payload: payload))
    #expect(servers.counters.udpEchoReplies == 1)
    #expect(servers.counters.replied == 1)
  }

  @Test func icmpEchoReply() throws {
    let request = PacketBuilder.icmpEcho(
      source: client, destination: serverC, identifier: 0x1234, sequence: 7, payload: Array(0..<40))
    let replies = try servers.deliver(request, now: 0)
    try #require(replies.count == 1)
    #expect(
      replies[0].bytes
        == PacketBuilder.icmpEcho(
          source: serverC, destination: client, type: ICMPType.echoReply, identifier: 0x1234, sequence: 7,
          payload: Array(0..<40)))
  }

  @Test func whoamiOverUDP() throws {
    let request = PacketBuilder.udp(
      source: client, destination: serverC, sourcePort: 51_234, destinationPort: 80, payload: Array("?".utf8))
    let replies = try servers.deliver(request, now: 0)
    try #require(replies.count == 1)
    #expect(String(decoding: replies[0].payload, as: UTF8.self) == "192.0.2.5:51234")
    #expect(replies[0].udpPorts?.source == 80)
  }

  @Test func stunBindingResponseCarriesMappedAddresses() throws {
    let txid: [UInt8] = Array(1...12)
    let request: [UInt8] = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42] + txid
    let replies = try servers.deliver(
      PacketBuilder.udp(source: client, destination: serverC, sourcePort: 40_003, destinationPort: 3478, payload: request),
      now: 0)
    try #require(replies.count == 1)
    let p = replies[0].payload
    try #require(p.count == 44)
    #expect(p[0] == 0x01 && p[1] == 0x01)  // binding success
    #expect(Int(p[2]) << 8 | Int(p[3]) == p.count - 20)
    #expect(Array(p[4..<8]) == [0x21, 0x12, 0xA4, 0x42])
    #expect(Array(p[8..<20]) == txid)
    // Walk the attributes.
    var xor: (UInt16, UInt32)? = nil
    var mapped: (UInt16, UInt32)? = nil
    var o = 20
    while o + 4 <= p.count {
      let type = UInt16(p[o]) << 8 | UInt16(p[o + 1])
      let length = Int(p[o + 2]) << 8 | Int(p[o + 3])
      let port = UInt16(p[o + 6]) << 8 | UInt16(p[o + 7])
      let addr = p[(o + 8)..<(o + 12)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
      #expect(p[o + 5] == 0x01)  // IPv4 family
      if type == 0x0020 { xor = (port ^ 0x2112, addr ^ 0x2112_A442) }
      if type == 0x0001 { mapped = (port, addr) }
      o += 4 + length
    }
    #expect(xor?.0 == 40_003 && xor?.1 == client.value)
    #expect(mapped?.0 == 40_003 && mapped?.1 == client.value)
    #expect(servers.counters.stunResponses == 1)
  }

  @Test(arguments: [
    ("bad cookie", [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x43] + [UInt8](repeating: 9, count: 12)),
    ("not a request", [0x01, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42] + [UInt8](repeating: 9, count: 12)),
    ("length mismatch", [0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42] + [UInt8](repeating: 9, count: 12)),
    ("truncated header", [0x00, 0x01, 0x00, 0x00, 0x21, 0x12]),
    ("attribute overruns", [0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42] + [UInt8](repeating: 9, count: 12) + [0x80, 0x22, 0x00, 0x08]),
    ("top bits set", [0xC0, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42] + [UInt8](repeating: 9, count: 12)),
  ] as [(String, [UInt8])])
  func stunIgnoresMalformed(name: String, body: [UInt8]) throws {
    let replies = try servers.deliver(
      PacketBuilder.udp(source: client, destination: serverC, sourcePort: 40_003, destinationPort: 3478, payload: body),
      now: 0)
    #expect(replies.isEmpty, "\(name)")
    #expect(servers.counters.stunIgnored == 1)
  }

  @Test func filteringProbeSendsAckAndTwoUnsolicited() throws {
    let replies = try servers.deliver(
      PacketBuilder.udp(source: client, destination: serverC, sourcePort: 40_004, destinationPort: 9999, payload: [1]),
      now: 0)
    try #require(replies.count == 3)
    let seen = replies.map { r in
      "\(r.parsed.source):\(r.udpPorts!.source)->\(r.parsed.destination):\(r.udpPorts!.destination) "
        + String(decoding: r.payload, as: UTF8.self)
    }
    #expect(
      seen == [
        "203.0.113.30:9999->192.0.2.5:40004 probe-ack",
        "203.0.113.30:10000->192.0.2.5:40004 unsolicited",
        "203.0.113.99:9999->192.0.2.5:40004 unsolicited",
      ])
    #expect(servers.counters.unsolicitedSent == 2)
  }

  @Test func closedUDPPortGetsPortUnreachableQuotingTheDatagram() throws {
    let request = PacketBuilder.udp(
      source: client, destination: serverA, sourcePort: 40_000, destinationPort: 5353, payload: Array(0..<100))
    let replies = try servers.deliver(request, now: 0)
    try #require(replies.count == 1)
    guard case let .icmpError(type, code, quoted) = replies[0].parsed.transport else {
      Issue.record("expected an ICMP error")
      return
    }
    #expect(type == 3 && code == 3)
    #expect(quoted.source == client && quoted.sourcePort == 40_000 && quoted.destinationPort == 5353)
    #expect(replies[0].payload == request)  // small enough to quote whole
    #expect(replies[0].parsed.source == serverA)
    #expect(servers.counters.noSuchService == 1)
  }

  @Test func bigDatagramQuoteIsCappedAt576() throws {
    let request = PacketBuilder.udp(
      source: client, destination: serverA, sourcePort: 40_000, destinationPort: 5353, payload: Array(repeating: 7, count: 1_200))
    let replies = try servers.deliver(request, now: 0)
    try #require(replies.count == 1)
    #expect(replies[0].bytes.count == 576)
    #expect(replies[0].payload == Array(request[0..<548]))
  }

  @Test func closedTCPPortGetsRST() throws {
    let syn = PacketBuilder.tcp(
      source: client, destination: serverA, sourcePort: 40_000, destinationPort: 81, flags: .syn, sequence: 500)
    let replies = try servers.deliver(syn, now: 0)
    try #require(replies.count == 1)
    let t = try #require(replies[0].tcp)
    #expect(t.flags == [.rst, .ack])
    #expect(t.acknowledgment == 501)
    #expect(t.sequence == 0)
    // An ACK for no connection gets RST with seq = its ack (RFC 9293 §3.10.7.1).
    let stray = PacketBuilder.tcp(
      source: client, destination: serverA, sourcePort: 40_001, destinationPort: 7, flags: .ack, sequence: 9,
      acknowledgment: 777)
    let rst = try #require(try servers.deliver(stray, now: 0).first?.tcp)
    #expect(rst.flags == .rst && rst.sequence == 777)
    // RST is never answered.
    let r = PacketBuilder.tcp(source: client, destination: serverA, sourcePort: 40_000, destinationPort: 81, flags: .rst)
    #expect(try servers.deliver(r, now: 0).isEmpty)
    #expect(servers.counters.tcpResets == 2)
  }

  @Test func serverWithoutServiceOrUnknownAddressIsCounted() throws {
    // 203.0.113.30 has no echo; 203.0.113.77 is not a server.
    let toC = PacketBuilder.icmpEcho(source: client, destination: ip("203.0.113.77"), identifier: 1, sequence: 1)
    #expect(try servers.deliver(toC, now: 0).isEmpty)
    #expect(servers.counters.noSuchServer == 1)
    let echoOnC = PacketBuilder.udp(source: client, destination: serverC, sourcePort: 1, destinationPort: 7, payload: [1])
    let replies = try servers.deliver(echoOnC, now: 0)
    #expect(replies.count == 1 && replies[0].parsed.protocolNumber == IPProtocol.icmp)
    #expect(servers.counters.noSuchService == 1)
  }

  @Test func serverSpecCodableRoundTrip() throws {
    let data = try JSONEncoder().encode(ServerSpec.labDefault)
    let back = try JSONDecoder().decode([ServerSpec].self, from: data)
    #expect(back == ServerSpec.labDefault)
    let bad = Data(#"{"ip":"203.0.113.300","services":["udpEcho"]}"#.utf8)
    #expect(throws: DecodingError.self) { try JSONDecoder().decode(ServerSpec.self, from: bad) }
  }

  @Test func malformedInputIsCountedAndNeverCrashes() throws {
    var rng = SeededRNG(seed: 42)
    let valid: [[UInt8]] = [
      PacketBuilder.udp(source: client, destination: serverA, sourcePort: 1, destinationPort: 7, payload: Array(0..<30)),
      PacketBuilder.tcp(source: client, destination: serverA, sourcePort: 2, destinationPort: 7, flags: .syn, sequence: 1),
      PacketBuilder.icmpEcho(source: client, destination: serverA, identifier: 1, sequence: 1, payload: [1, 2, 3]),
      PacketBuilder.udp(
        source: client, destination: serverC, sourcePort: 3, destinationPort: 3478,
        payload: [0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42] + Array(repeating: 1, count: 12)),
    ]
    var fed = 0
    // Every truncation of every valid packet.
    for packet in valid {
      for n in 0..<packet.count {
        _ = try servers.deliver(Array(packet[0..<n]), now: 0)
        fed += 1
      }
    }
    #expect(servers.counters.malformed == fed)
    // Random bytes and random single-byte corruptions: whatever comes out must be valid.
    for i in 0..<3_000 {
      var bytes: [UInt8]
      if i % 2 == 0 {
        bytes = (0..<Int.random(in: 0...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        if i % 4 == 0, !bytes.isEmpty { bytes[0] = 0x45 }
      } else {
        bytes = valid[i % valid.count]
        bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
      }
      _ = try servers.deliver(bytes, now: UInt64(i) * ms)
    }
    _ = try servers.advance(to: 600_000 * ms)
    #expect(servers.counters.received == fed + 3_000)
    #expect(servers.counters.malformed > fed + 1_000)
  }
}
