import HostnatAddressing
import HostnatPackets
import HostnatTestSupport
import Testing

@Suite struct ChecksumTests {
  @Test func rfc1071Example() {
    // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (after end-around carry).
    let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
    #expect(bytes.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum($0)) } == 0xDDF2)
    #expect(InternetChecksum.checksum(bytes) == 0x220D)
  }

  @Test(arguments: [0, 1, 2, 3, 5, 7, 64, 1499])
  func oddLengthsPadWithZero(length: Int) {
    var rng = SeededRNG(seed: UInt64(length))
    let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
    var reference: UInt32 = 0
    var i = 0
    while i < length {
      reference += UInt32(bytes[i]) << 8 | (i + 1 < length ? UInt32(bytes[i + 1]) : 0)
      i += 2
    }
    while reference > 0xFFFF { reference = (reference & 0xFFFF) + (reference >> 16) }
    #expect(bytes.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum($0)) } == UInt16(reference))
  }

  @Test func incrementalUpdateMatchesRecomputation() {
    // RFC 1624: updating one word incrementally must equal recomputing from scratch.
    var rng = SeededRNG(seed: 1624)
    for _ in 0..<5_000 {
      var words = (0..<10).map { _ in UInt16.random(in: 0...UInt16.max, using: &rng) }
      let bytes = { (w: [UInt16]) in w.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } }
      let before = InternetChecksum.checksum(bytes(words))
      let index = Int.random(in: 0..<10, using: &rng)
      let old = words[index]
      words[index] = UInt16.random(in: 0...UInt16.max, using: &rng)
      let full = InternetChecksum.checksum(bytes(words))
      let incremental = InternetChecksum.update(before, old: old, new: words[index])
      // 0x0000 and 0xFFFF are the same one's-complement value; a full computation never yields 0xFFFF
      // for non-zero data, and RFC 1624 eqn. 3 never yields it either.
      #expect(incremental == full)
    }
  }

  @Test func addressAndPortUpdateMatchesRecomputation() throws {
    let original = PacketBuilder.udp(
      source: ip("10.0.0.2"), destination: ip("203.0.113.80"), sourcePort: 24000,
      destinationPort: 80, payload: Array("hello".utf8))
    let rewritten = PacketBuilder.udp(
      source: ip("192.0.2.10"), destination: ip("203.0.113.80"), sourcePort: 34022,
      destinationPort: 80, payload: Array("hello".utf8))
    let oldSum = UInt16(original[26]) << 8 | UInt16(original[27])
    let newSum = InternetChecksum.update(
      oldSum, oldAddress: 0x0A00_0002, newAddress: 0xC000_020A, oldPort: 24000, newPort: 34022)
    #expect(newSum == UInt16(rewritten[26]) << 8 | UInt16(rewritten[27]))
  }

  @Test func udpComputedZeroIsSentAsAllOnes() throws {
    // Choose the last payload word so the one's-complement sum is 0xFFFF, i.e. the checksum is 0.
    let src = ip("10.0.0.2")
    let dst = ip("203.0.113.80")
    let probe = PacketBuilder.udp(source: src, destination: dst, sourcePort: 1, destinationPort: 2, payload: [0, 0], checksum: false)
    let partial = InternetChecksum.fold(
      probe[20...].withUnsafeBytes { InternetChecksum.sum($0) }
        &+ InternetChecksum.pseudoHeaderSum(source: src, destination: dst, protocol: 17, length: 10))
    let filler = 0xFFFF - partial
    let packet = PacketBuilder.udp(
      source: src, destination: dst, sourcePort: 1, destinationPort: 2, payload: [UInt8(filler >> 8), UInt8(filler & 0xFF)])
    #expect(packet[26] == 0xFF && packet[27] == 0xFF)
    #expect(InternetChecksum.udpWire(0) == 0xFFFF)
    #expect(InternetChecksum.udpWire(0x1234) == 0x1234)
    let parsed = try PacketParser.parse(packet)
    #expect(parsed.transport == .udp(sourcePort: 1, destinationPort: 2, hasChecksum: true))
  }
}
