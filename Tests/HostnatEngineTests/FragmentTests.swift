import HostnatAddressing
import HostnatEngine
import HostnatPackets
import Testing

/// Splits an IPv4 packet (20-byte header, DF clear) into fragments whose payloads are at most
/// `chunk` bytes (a multiple of 8), each with a correct header checksum.
func fragments(_ packet: [UInt8], chunk: Int = 1480) -> [[UInt8]] {
  let header = Array(packet[0..<20])
  let payload = Array(packet[20...])
  var out: [[UInt8]] = []
  var offset = 0
  while offset < payload.count {
    let end = min(offset + chunk, payload.count)
    var h = header
    let total = 20 + end - offset
    h[2] = UInt8(total >> 8)
    h[3] = UInt8(total & 0xFF)
    let field = UInt16(offset / 8) | (end < payload.count ? 0x2000 : 0)
    h[6] = UInt8(field >> 8)
    h[7] = UInt8(field & 0xFF)
    h[10] = 0
    h[11] = 0
    let sum = InternetChecksum.checksum(h)
    h[10] = UInt8(sum >> 8)
    h[11] = UInt8(sum & 0xFF)
    out.append(h + payload[offset..<end])
    offset = end
  }
  return out
}

/// Joins fragments (in any order) back into one packet, as the receiving host would.
func reassemble(_ pieces: [[UInt8]]) -> [UInt8]? {
  guard let first = pieces.first(where: { ($0[6] & 0x1F) == 0 && $0[7] == 0 }) else { return nil }
  var payload: [UInt8] = []
  for piece in pieces.sorted(by: { (Int($0[6] & 0x1F) << 8 | Int($0[7])) < (Int($1[6] & 0x1F) << 8 | Int($1[7])) }) {
    payload += piece[20...]
  }
  let source = IPv4Address(UInt32(first[12]) << 24 | UInt32(first[13]) << 16 | UInt32(first[14]) << 8 | UInt32(first[15]))
  let destination = IPv4Address(UInt32(first[16]) << 24 | UInt32(first[17]) << 16 | UInt32(first[18]) << 8 | UInt32(first[19]))
  return PacketBuilder.ipv4(source: source, destination: destination, protocol: first[9], payload: payload, dontFragment: false)
}

func headerChecksumValid(_ packet: [UInt8]) -> Bool { InternetChecksum.checksum(Array(packet[0..<20])) == 0 }

/// RFC 4787 REQ-14 without reassembly: a datagram's later fragments follow the translation its
/// first fragment got; fragments that come before it (or belong to no flow) are dropped.
@Suite struct FragmentTests {
  static func bigUDP(from src: IPv4Address, _ sport: UInt16, to dst: IPv4Address, _ dport: UInt16, id: UInt16) -> [UInt8] {
    var p = PacketBuilder.udp(
      source: src, destination: dst, sourcePort: sport, destinationPort: dport, payload: (0..<3000).map { UInt8($0 & 0xFF) },
      identification: id)
    // Fragmentable: DF clear (the IP checksum changes with it).
    p[6] &= 0xBF
    p[10] = 0
    p[11] = 0
    let sum = InternetChecksum.checksum(Array(p[0..<20]))
    p[10] = UInt8(sum >> 8)
    p[11] = UInt8(sum & 0xFF)
    return p
  }

  @Test func fragmentsFollowTheirFirstFragmentBothWays() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let pieces = fragments(Self.bigUDP(from: vmIP, 24000, to: server, 5000, id: 0x1234))
    #expect(pieces.count == 3)
    var sent: [[UInt8]] = []
    for (i, piece) in pieces.enumerated() {
      let (verdict, out) = run(engine, outbound: true, piece, now: UInt64(i))
      #expect(verdict == .forward, "fragment \(i)")
      #expect(headerChecksumValid(out), "fragment \(i) IP checksum")
      #expect(Array(out[12..<16]) == [192, 0, 2, 10], "fragment \(i) source is the NAT IP")
      sent.append(out)
    }
    // The server reassembles a datagram whose UDP checksum verifies, from NAT IP:port.
    let joined = try #require(reassemble(sent))
    let whole = try #require(expectValid(joined))
    #expect(whole.source == natIP && whole.destination == server)
    let natPort = try #require(ports(whole)?.0)
    #expect((34000..<34064).contains(Int(natPort)))

    // Its fragmented reply comes back to the VM, every fragment, last one first.
    let reply = fragments(Self.bigUDP(from: server, 5000, to: natIP, natPort, id: 0x9999))
    let first = run(engine, outbound: false, reply[0], now: 10)
    #expect(first.0 == .forward)
    var received = [first.1]
    for piece in reply.dropFirst().reversed() {
      let (verdict, out) = run(engine, outbound: false, piece, now: 11)
      #expect(verdict == .forward)
      #expect(headerChecksumValid(out))
      received.append(out)
    }
    let joinedBack = try #require(reassemble(received))
    let back = try #require(expectValid(joinedBack))
    #expect(back.destination == vmIP && ports(back)?.1 == 24000)
    #expect(engine.globalCounters.fragments == 0)
  }

  @Test func fragmentsWithoutTheirFirstAreDropped() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let pieces = fragments(Self.bigUDP(from: vmIP, 24001, to: server, 5000, id: 7))
    // Before the first fragment: dropped (no reassembly, no buffering).
    #expect(run(engine, outbound: true, pieces[2], now: 0).0 == .drop(.fragment))
    #expect(run(engine, outbound: true, pieces[0], now: 1).0 == .forward)
    #expect(run(engine, outbound: true, pieces[1], now: 2).0 == .forward)
    // Another datagram's id, or the same id from another source: no match.
    var otherID = pieces[1]
    otherID[5] ^= 1
    #expect(run(engine, outbound: true, otherID, now: 3).0 == .drop(.fragment))
    // Too late: the entry lived 30 s.
    #expect(run(engine, outbound: true, pieces[2], now: 2 + 31 * second).0 == .drop(.fragment))
    #expect(engine.globalCounters.fragments == 3)

    // Inbound fragments of a datagram no flow admits are filtered, the later ones with it.
    let probe = fragments(Self.bigUDP(from: server, 6000, to: natIP, 34001, id: 8))
    #expect(run(engine, outbound: false, probe[0], now: 4).0 == .drop(.filteredInbound))
    #expect(run(engine, outbound: false, probe[1], now: 4).0 == .drop(.fragment))
    #expect(engine.flowCount == 1)
  }
}
