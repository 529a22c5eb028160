import Foundation
import HostnatPackets
import Testing

/// SplitMix64: a seeded generator so property tests are reproducible.
struct SeededRNG: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

enum Fixture {
  static let hand = [
    "hand-tcp-syn", "hand-udp", "hand-udp-no-checksum", "hand-icmp-echo-request", "hand-icmp-time-exceeded",
  ]
  static let captured = [
    "captured-icmp-echo-request", "captured-icmp-echo-reply", "captured-udp", "captured-udp-to-closed-port",
    "captured-icmp-port-unreachable", "captured-tcp-syn", "captured-tcp-synack", "captured-tcp-ack", "captured-tcp-rst",
  ]
  static let all = hand + captured + ["hand-geneve"]

  static func bytes(_ name: String) throws -> [UInt8] {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "hex", subdirectory: "Fixtures"))
    let text = try String(contentsOf: url, encoding: .utf8)
    return try #require(Hex.decode(text), "fixture \(name) is not valid hex")
  }
}

/// Address literal for tests (traps on a typo, which fails the test run loudly).
func ip(_ text: String) -> IPv4Address {
  guard let address = IPv4Address(text) else { preconditionFailure("bad address literal \(text)") }
  return address
}
