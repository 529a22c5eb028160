import HostnatAddressing
import HostnatPackets
import HostnatTestSupport
import Testing

@Suite struct MalformedTests {
  static func mutate(_ name: String, _ change: (inout [UInt8]) -> Void) -> [UInt8] {
    var bytes = (try? Fixture.bytes(name)) ?? []
    change(&bytes)
    return bytes
  }

  struct Case: Sendable, CustomStringConvertible {
    var description: String
    var bytes: [UInt8]
    var error: PacketError
  }

  static let cases: [Case] = [
    .init(description: "empty", bytes: [], error: .truncated(.ipv4, needed: 20, available: 0)),
    .init(description: "19 bytes", bytes: Array(repeating: 0x45, count: 19), error: .truncated(.ipv4, needed: 20, available: 19)),
    .init(description: "IPv6 version", bytes: mutate("hand-udp") { $0[0] = 0x65 }, error: .badVersion(.ipv4, 6)),
    .init(description: "IHL 4", bytes: mutate("hand-udp") { $0[0] = 0x44 }, error: .badHeaderLength(.ipv4, 16)),
    .init(description: "IHL beyond buffer", bytes: mutate("hand-udp") { $0[0] = 0x4F }, error: .truncated(.ipv4, needed: 60, available: 32)),
    .init(description: "total length too big", bytes: mutate("hand-udp") { $0[3] = 33 }, error: .totalLengthMismatch(declared: 33, available: 32)),
    .init(description: "total length below header", bytes: mutate("hand-udp") { $0[3] = 19 }, error: .totalLengthMismatch(declared: 19, available: 32)),
    .init(description: "IP checksum", bytes: mutate("hand-udp") { $0[10] ^= 1 }, error: .badChecksum(.ipv4)),
    .init(description: "UDP checksum", bytes: mutate("hand-udp") { $0[31] ^= 1 }, error: .badChecksum(.udp)),
    .init(description: "TCP checksum", bytes: mutate("hand-tcp-syn") { $0[39] ^= 1 }, error: .badChecksum(.tcp)),
    .init(description: "ICMP checksum", bytes: mutate("hand-icmp-echo-request") { $0[31] ^= 1 }, error: .badChecksum(.icmp)),
    .init(
      description: "UDP length mismatch",
      bytes: PacketBuilder.ipv4(source: .init(1), destination: .init(2), protocol: 17, payload: [0, 1, 0, 2, 0, 9, 0, 0]),
      error: .lengthMismatch(.udp, declared: 9, available: 8)),
    .init(
      description: "TCP data offset 4",
      bytes: PacketBuilder.ipv4(source: .init(1), destination: .init(2), protocol: 6, payload: [UInt8](repeating: 0, count: 12) + [0x40] + [UInt8](repeating: 0, count: 7)),
      error: .badHeaderLength(.tcp, 16)),
    .init(
      description: "TCP options beyond segment",
      bytes: PacketBuilder.ipv4(source: .init(1), destination: .init(2), protocol: 6, payload: [UInt8](repeating: 0, count: 12) + [0x60] + [UInt8](repeating: 0, count: 7)),
      error: .truncated(.tcp, needed: 24, available: 20)),
    .init(
      description: "short ICMP",
      bytes: PacketBuilder.ipv4(source: .init(1), destination: .init(2), protocol: 1, payload: [8, 0, 0, 0]),
      error: .truncated(.icmp, needed: 8, available: 4)),
    .init(
      description: "GRE",
      bytes: PacketBuilder.ipv4(source: .init(1), destination: .init(2), protocol: 47, payload: [0, 0, 8, 0]),
      error: .unsupportedProtocol(47)),
    .init(
      description: "ICMP timestamp",
      bytes: PacketBuilder.icmpEcho(source: .init(1), destination: .init(2), type: 13, identifier: 1, sequence: 1),
      error: .unsupportedICMPType(13)),
    .init(
      description: "non-first fragment",
      bytes: { () -> [UInt8] in
        var b = PacketBuilder.ipv4(source: .init(1), destination: .init(2), protocol: 17, payload: [1, 2, 3, 4], dontFragment: false)
        b[6] = 0x00
        b[7] = 0xB9  // offset 185 × 8 = 1480
        b.withUnsafeMutableBytes { raw in
          if let ip = try? IPv4PacketView(validating: raw) { ip.headerChecksum = 0; ip.updateHeaderChecksum() }
        }
        return b
      }(),
      error: .nonFirstFragment(offset: 1480)),
    .init(
      description: "ICMP error quoting too little",
      bytes: PacketBuilder.icmpError(
        source: .init(1), destination: .init(2), type: 3, code: 3,
        quoting: PacketBuilder.udp(source: .init(2), destination: .init(1), sourcePort: 1, destinationPort: 2), quotedBytes: 24),
      error: .truncated(.embeddedIPv4, needed: 28, available: 24)),
  ]

  @Test(arguments: cases)
  func reportsTheReason(testCase: Case) {
    #expect(throws: testCase.error) { try PacketParser.parse(testCase.bytes) }
  }

  @Test func geneveErrors() throws {
    let good = try Fixture.bytes("hand-geneve")
    // Geneve starts after 20 (IP) + 8 (UDP) bytes; UDP checksum is not verified by decapsulate.
    var badVersion = good
    badVersion[28] |= 0x40
    #expect(throws: PacketError.badVersion(.geneve, 1)) { try Geneve.decapsulate(badVersion) }
    var badOption = good
    badOption[39] = 0x01  // option claims 4 more data bytes than the 1-word options area holds
    #expect(throws: PacketError.malformedOptions) { try Geneve.decapsulate(badOption) }
    var ethernet = good
    ethernet[30] = 0x65
    ethernet[31] = 0x58
    #expect(throws: PacketError.unsupportedPayloadType(0x6558)) { try Geneve.decapsulate(ethernet) }
    #expect(throws: PacketError.unsupportedProtocol(17)) { try Geneve.decapsulate(good, port: 4789) }
  }

  @Test func everyPrefixOfEveryFixtureIsAnErrorOrAValue() throws {
    for name in Fixture.all {
      let bytes = try Fixture.bytes(name)
      for length in 0..<bytes.count {
        let prefix = Array(bytes[0..<length])
        // A strict prefix of a datagram is shorter than its total length, so it must be rejected.
        #expect(throws: PacketError.self, "\(name)[0..<\(length)]") { try PacketParser.parse(prefix, verifyChecksums: false) }
        _ = try? Geneve.decapsulate(prefix)
      }
    }
  }

  @Test func randomBytesAndMutationsNeverTrap() throws {
    var rng = SeededRNG(seed: 0xBAD_F00D)
    let fixtures = try Fixture.all.map(Fixture.bytes)
    var values = 0
    for i in 0..<20_000 {
      var bytes: [UInt8]
      if i % 2 == 0 {
        bytes = (0..<Int.random(in: 0...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        if !bytes.isEmpty, Bool.random(using: &rng) { bytes[0] = 0x45 }
      } else {
        bytes = fixtures[Int.random(in: 0..<fixtures.count, using: &rng)]
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
          bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
        }
      }
      for verify in [true, false] {
        if (try? PacketParser.parse(bytes, verifyChecksums: verify)) != nil { values += 1 }
      }
      _ = try? Geneve.decapsulate(bytes)
    }
    // Sanity: the mutated fixtures sometimes still parse (e.g. a changed payload byte without verification).
    #expect(values > 0)
  }
}
