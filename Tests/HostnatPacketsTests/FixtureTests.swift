import HostnatAddressing
import HostnatPackets
import HostnatTestSupport
import Testing

@Suite struct HandFixtureTests {
  @Test func tcpSynFromTheTranslationExample() throws {
    let bytes = try Fixture.bytes("hand-tcp-syn")
    let parsed = try PacketParser.parse(bytes)
    #expect(parsed.source == ip("10.0.0.2"))
    #expect(parsed.destination == ip("203.0.113.80"))
    #expect(parsed.totalLength == 40 && parsed.ttl == 64 && parsed.dontFragment && parsed.identification == 0x1C46)
    #expect(parsed.transport == .tcp(sourcePort: 24000, destinationPort: 80, flags: .syn, sequence: 0x0102_0304, acknowledgment: 0))
    // The builder reproduces the independently written fixture byte for byte.
    #expect(
      PacketBuilder.tcp(
        source: parsed.source, destination: parsed.destination, sourcePort: 24000, destinationPort: 80, flags: .syn,
        sequence: 0x0102_0304, identification: 0x1C46) == bytes)
  }

  @Test(arguments: [("hand-udp", true), ("hand-udp-no-checksum", false)])
  func udp(name: String, hasChecksum: Bool) throws {
    let bytes = try Fixture.bytes(name)
    let parsed = try PacketParser.parse(bytes)
    #expect(parsed.transport == .udp(sourcePort: 5353, destinationPort: 53, hasChecksum: hasChecksum))
    #expect(
      PacketBuilder.udp(
        source: parsed.source, destination: parsed.destination, sourcePort: 5353, destinationPort: 53,
        payload: Array("ping".utf8), checksum: hasChecksum, identification: 0x1C46) == bytes)
  }

  @Test func icmpEcho() throws {
    let bytes = try Fixture.bytes("hand-icmp-echo-request")
    let parsed = try PacketParser.parse(bytes)
    #expect(parsed.transport == .icmpEcho(type: 8, identifier: 0x4242, sequence: 7))
    #expect(
      PacketBuilder.icmpEcho(
        source: parsed.source, destination: parsed.destination, identifier: 0x4242, sequence: 7,
        payload: Array("abcd".utf8), identification: 0x1C46) == bytes)
  }

  @Test func icmpTimeExceededQuotesTheTranslatedSyn() throws {
    let bytes = try Fixture.bytes("hand-icmp-time-exceeded")
    let parsed = try PacketParser.parse(bytes)
    #expect(parsed.source == ip("198.51.100.1") && parsed.destination == ip("192.0.2.10"))
    #expect(
      parsed.transport
        == .icmpError(
          type: 11, code: 0,
          quoted: .init(
            source: ip("192.0.2.10"), destination: ip("203.0.113.80"), protocolNumber: 6,
            sourcePort: 34022, destinationPort: 80)))
    var copy = bytes
    let quotedChecksumValid = copy.withUnsafeMutableBytes { raw -> Bool in
      guard let ip = try? IPv4PacketView(validating: raw), let icmp = try? ICMPMessageView(validating: ip.payload),
        let quote = try? QuotedDatagramView(validating: icmp.quoted)
      else { return false }
      return quote.headerChecksumIsValid
    }
    #expect(quotedChecksumValid)
  }

  @Test func geneveCarriesInnerIPv4() throws {
    let bytes = try Fixture.bytes("hand-geneve")
    let outer = try PacketParser.parse(bytes)
    #expect(outer.transport == .udp(sourcePort: 49152, destinationPort: 6081, hasChecksum: true))
    let decap = try Geneve.decapsulate(bytes)
    #expect(decap.vni == 0xABCD)
    #expect(decap.outerSource == ip("172.16.0.1") && decap.outerDestination == ip("172.16.0.2"))
    #expect(Array(bytes[decap.innerRange]) == (try Fixture.bytes("hand-udp")))
    // The encapsulation builder reproduces the fixture (same option, same outer fields).
    let rebuilt = Geneve.encapsulate(
      try Fixture.bytes("hand-udp"), vni: 0xABCD, outerSource: ip("172.16.0.1"),
      outerDestination: ip("172.16.0.2"), options: [0x01, 0x03, 0x01, 0x00])
    #expect(rebuilt == bytes)
  }
}

@Suite struct CapturedFixtureTests {
  /// Fields the kernel put on the wire, and tcpdump's "should be" TCP/UDP checksum (lo sends the
  /// CHECKSUM_PARTIAL seed instead, see Fixtures/README.md).
  struct Expectation: Sendable, CustomStringConvertible {
    var name: String
    var transport: ParsedPacket.Transport
    var fullL4Checksum: UInt16?
    var description: String { name }
  }

  static let expectations: [Expectation] = [
    .init(name: "captured-icmp-echo-request", transport: .icmpEcho(type: 8, identifier: 0x1234, sequence: 1)),
    .init(name: "captured-icmp-echo-reply", transport: .icmpEcho(type: 0, identifier: 0x1234, sequence: 1)),
    .init(name: "captured-udp", transport: .udp(sourcePort: 35477, destinationPort: 40001, hasChecksum: true), fullL4Checksum: 0x7DA3),
    .init(name: "captured-udp-to-closed-port", transport: .udp(sourcePort: 35477, destinationPort: 40009, hasChecksum: true), fullL4Checksum: 0xA2AC),
    .init(
      name: "captured-icmp-port-unreachable",
      transport: .icmpError(
        type: 3, code: 3,
        quoted: .init(
          source: ip("127.0.0.1"), destination: ip("127.0.0.1"), protocolNumber: 17,
          sourcePort: 35477, destinationPort: 40009))),
    .init(name: "captured-tcp-syn", transport: .tcp(sourcePort: 46120, destinationPort: 40002, flags: .syn, sequence: 1_571_743_449, acknowledgment: 0), fullL4Checksum: 0x0E37),
    .init(name: "captured-tcp-synack", transport: .tcp(sourcePort: 40002, destinationPort: 46120, flags: [.syn, .ack], sequence: 3_106_754_460, acknowledgment: 1_571_743_450), fullL4Checksum: 0x5100),
    .init(name: "captured-tcp-ack", transport: .tcp(sourcePort: 46120, destinationPort: 40002, flags: .ack, sequence: 1_571_743_450, acknowledgment: 3_106_754_461), fullL4Checksum: 0x797F),
    .init(name: "captured-tcp-rst", transport: .tcp(sourcePort: 40002, destinationPort: 46120, flags: [.rst, .ack], sequence: 3_106_754_461, acknowledgment: 1_571_743_450), fullL4Checksum: 0x784A),
  ]

  @Test(arguments: expectations)
  func parsesKernelPacket(expected: Expectation) throws {
    let bytes = try Fixture.bytes(expected.name)
    // TCP/UDP checksums are offload seeds on lo, so skip L4 verification here and check them below.
    let parsed = try PacketParser.parse(bytes, verifyChecksums: expected.fullL4Checksum == nil)
    #expect(parsed.source == ip("127.0.0.1") && parsed.destination == ip("127.0.0.1"))
    #expect(parsed.transport == expected.transport)
    #expect(parsed.totalLength == bytes.count)
  }

  @Test(arguments: expectations)
  func recomputedChecksumsReproduceTheCapture(expected: Expectation) throws {
    let original = try Fixture.bytes(expected.name)
    var bytes = original
    try bytes.withUnsafeMutableBytes { raw in
      let ip = try IPv4PacketView(validating: raw)
      #expect(ip.headerChecksumIsValid)
      let captured = ip.headerChecksum
      ip.headerChecksum = 0
      ip.updateHeaderChecksum()
      #expect(ip.headerChecksum == captured)
      switch ip.protocolNumber {
      case IPProtocol.icmp:
        let icmp = try ICMPMessageView(validating: ip.payload)
        #expect(icmp.checksumIsValid)
        let seen = icmp.checksum
        icmp.checksum = icmp.computeChecksum()
        #expect(icmp.checksum == seen)
      case IPProtocol.tcp:
        let tcp = try TCPHeaderView(validating: ip.payload)
        // CHECKSUM_PARTIAL: the field is the folded pseudo-header sum, not complemented.
        #expect(tcp.checksum == InternetChecksum.fold(ip.pseudoHeaderSum))
        tcp.checksum = tcp.computeChecksum(pseudoHeaderSum: ip.pseudoHeaderSum)
        #expect(tcp.checksum == expected.fullL4Checksum)
        #expect(tcp.checksumIsValid(pseudoHeaderSum: ip.pseudoHeaderSum))
      case IPProtocol.udp:
        let udp = try UDPHeaderView(validating: ip.payload)
        #expect(udp.checksum == InternetChecksum.fold(ip.pseudoHeaderSum))
        udp.checksum = udp.computeChecksum(pseudoHeaderSum: ip.pseudoHeaderSum)
        #expect(udp.checksum == expected.fullL4Checksum)
        #expect(udp.checksumIsValid(pseudoHeaderSum: ip.pseudoHeaderSum))
      default:
        Issue.record("unexpected protocol \(ip.protocolNumber)")
      }
    }
    if expected.fullL4Checksum == nil { #expect(bytes == original) }
    // With the full checksum in place the strict parser accepts the packet.
    #expect(throws: Never.self) { try PacketParser.parse(bytes) }
  }
}
