import HostnatAddressing
import HostnatNetns
import HostnatPackets
import Testing

@Suite("Path MTU: fragmentation-needed and fragments")
struct PathMTUTests {
  let server = IPv4Address(192, 0, 2, 80)
  let vm = IPv4Address(10, 10, 0, 2)

  /// A UDP packet of `total` bytes from 192.0.2.80:7000 to 10.10.0.2:1030 (payload bytes 0, 1, 2, ...).
  func bigUDP(total: Int, dontFragment: Bool = true) -> [UInt8] {
    var packet = PacketBuilder.udp(
      source: server, destination: vm, sourcePort: 7000, destinationPort: 1030,
      payload: (0..<(total - 28)).map { UInt8(truncatingIfNeeded: $0) }, identification: 0x1234)
    if !dontFragment {
      packet[6] = 0
      let sum = InternetChecksum.checksum(Array(packet[0..<20]).enumerated().map { $0.offset == 10 || $0.offset == 11 ? 0 : $0.element })
      packet[10] = UInt8(sum >> 8)
      packet[11] = UInt8(sum & 0xFF)
    }
    return packet
  }

  func fragNeeded(_ packet: [UInt8], mtu: Int = 1400, source: IPv4Address? = nil, room: Int = 576) -> [UInt8]? {
    var out = [UInt8](repeating: 0xEE, count: room)
    let n = packet.withUnsafeBytes { p in
      out.withUnsafeMutableBytes { o in PathMTU.fragmentationNeeded(quoting: p, nextHopMTU: mtu, source: source ?? vm, into: o) }
    }
    return n.map { Array(out[0..<$0]) }
  }

  func be16(_ b: [UInt8], _ i: Int) -> Int { Int(b[i]) << 8 | Int(b[i + 1]) }

  @Test("the documented MTUs: 1500 - 36 bytes of underlay leaves 1464; VMs get 1400")
  func constants() {
    #expect(PathMTU.underlayOverhead == 36)
    #expect(PathMTU.vmMTU == 1400)
    #expect(PathMTU.vmMTU + PathMTU.underlayOverhead <= 1500 - 64)
    #expect(PathMTU.internetMTU == 1500)
  }

  @Test("fragmentation-needed for a 1500-byte DF packet: every byte of the 576-byte error")
  func fragNeededBytes() throws {
    let original = bigUDP(total: 1500)
    let error = try #require(fragNeeded(original))
    #expect(error.count == 576)
    // IPv4 header: version 4, IHL 5, TOS 0xC0, total 576, id 0, no flags, TTL 64, ICMP.
    #expect(Array(error[0..<12]) == [0x45, 0xC0, 0x02, 0x40, 0, 0, 0, 0, 64, 1, error[10], error[11]])
    #expect(Array(error[12..<16]) == [10, 10, 0, 2])  // from the VM (the too-big packet's destination)
    #expect(Array(error[16..<20]) == [192, 0, 2, 80])  // to the sender
    #expect(InternetChecksum.checksum(Array(error[0..<20])) == 0)
    // ICMP: type 3 code 4, checksum, unused 0, next-hop MTU 1400 = 0x0578.
    #expect(error[20] == 3 && error[21] == 4)
    #expect(Array(error[24..<28]) == [0, 0, 0x05, 0x78])
    #expect(InternetChecksum.checksum(Array(error[20...])) == 0)
    // The quote: the first 548 bytes of the original, unchanged.
    #expect(Array(error[28...]) == Array(original[0..<548]))
    let parsed = try PacketParser.parse(error)
    #expect(
      parsed.transport
        == .icmpError(
          type: 3, code: 4,
          quoted: .init(source: server, destination: vm, protocolNumber: IPProtocol.udp, sourcePort: 7000, destinationPort: 1030)))
  }

  @Test("a short packet is quoted whole; an explicit source and another MTU are used")
  func shortPacket() throws {
    let original = bigUDP(total: 100)
    let router = IPv4Address(10, 10, 0, 1)
    let error = try #require(fragNeeded(original, mtu: 576, source: router))
    #expect(error.count == 128)
    #expect(be16(error, 2) == 128)
    #expect(Array(error[12..<16]) == [10, 10, 0, 1])
    #expect(be16(error, 26) == 576)
    #expect(Array(error[28...]) == original)
    #expect(InternetChecksum.checksum(Array(error[20...])) == 0)
  }

  @Test("an ICMP echo request gets an error; no error about errors, fragments, odd addresses, or without room")
  func whenNoError() throws {
    let echo = PacketBuilder.icmpEcho(source: server, destination: vm, identifier: 7, sequence: 1, payload: [UInt8](repeating: 1, count: 1472))
    #expect(fragNeeded(echo) != nil)
    let icmpError = PacketBuilder.icmpError(
      source: server, destination: vm, type: 3, code: 3, quoting: bigUDP(total: 60), quotedBytes: 60)
    #expect(fragNeeded(icmpError) == nil)
    var nonFirst = bigUDP(total: 1500)
    nonFirst[7] = 0x10  // offset 128 bytes
    #expect(fragNeeded(nonFirst) == nil)
    for source in [IPv4Address(0, 0, 0, 0), IPv4Address(127, 0, 0, 1), IPv4Address(224, 0, 0, 1), IPv4Address(255, 255, 255, 255)] {
      let p = PacketBuilder.udp(source: source, destination: vm, sourcePort: 1, destinationPort: 2, payload: [UInt8](repeating: 0, count: 1472))
      #expect(fragNeeded(p) == nil, "source \(source)")
    }
    for destination in [IPv4Address(239, 1, 2, 3), IPv4Address(255, 255, 255, 255)] {
      let p = PacketBuilder.udp(source: server, destination: destination, sourcePort: 1, destinationPort: 2, payload: [UInt8](repeating: 0, count: 1472))
      #expect(fragNeeded(p) == nil, "destination \(destination)")
    }
    #expect(fragNeeded(bigUDP(total: 1500), room: 575) == nil)
    #expect(fragNeeded([0x60, 0, 0, 0] + [UInt8](repeating: 0, count: 36)) == nil)  // IPv6
  }

  @Test("fragments of a 3000-byte packet for MTU 1400: sizes, offsets, flags, checksums, payload")
  func fragments() throws {
    let original = bigUDP(total: 3000, dontFragment: false)
    var scratch = [UInt8](repeating: 0, count: 2048)
    var pieces: [[UInt8]] = []
    let n = original.withUnsafeBytes { p in
      scratch.withUnsafeMutableBytes { s in PathMTU.fragment(p, mtu: 1400, scratch: s) { pieces.append(Array($0)) } }
    }
    #expect(n == 3)
    #expect(pieces.map(\.count) == [1396, 1396, 248])  // 1376 = (1400 - 20) rounded down to 8
    #expect(pieces.map { be16($0, 6) } == [0x2000, 0x2000 | 172, 344])
    for p in pieces {
      #expect(be16(p, 2) == p.count)
      #expect(be16(p, 4) == 0x1234)
      #expect(InternetChecksum.checksum(Array(p[0..<20])) == 0)
      #expect(Array(p[12..<20]) == Array(original[12..<20]))
    }
    #expect(pieces.flatMap { $0[20...] } == Array(original[20...]))

    // A fragment with more to come keeps MF on its last piece, and its offset is added.
    var middle = bigUDP(total: 1500, dontFragment: false)
    middle[6] = 0x20
    middle[7] = 100  // offset 800 bytes, more fragments
    middle[10] = 0
    middle[11] = 0
    let sum = InternetChecksum.checksum(Array(middle[0..<20]))
    middle[10] = UInt8(sum >> 8)
    middle[11] = UInt8(sum & 0xFF)
    pieces = []
    _ = middle.withUnsafeBytes { p in
      scratch.withUnsafeMutableBytes { s in PathMTU.fragment(p, mtu: 1000, scratch: s) { pieces.append(Array($0)) } }
    }
    #expect(pieces.map { be16($0, 6) } == [0x2000 | 100, 0x2000 | (100 + 122)])

    // DF packets and packets with options are not split.
    let df = bigUDP(total: 3000)
    let refused = df.withUnsafeBytes { p in scratch.withUnsafeMutableBytes { s in PathMTU.fragment(p, mtu: 1400, scratch: s) { _ in } } }
    #expect(refused == nil)
    var withOptions = Array(original[0..<20]) + [1, 1, 1, 0] + Array(original[20...])
    withOptions[0] = 0x46
    withOptions[2] = UInt8((original.count + 4) >> 8)
    withOptions[3] = UInt8((original.count + 4) & 0xFF)
    let refusedOptions = withOptions.withUnsafeBytes { p in
      scratch.withUnsafeMutableBytes { s in PathMTU.fragment(p, mtu: 1400, scratch: s) { _ in } }
    }
    #expect(refusedOptions == nil)
  }
}
