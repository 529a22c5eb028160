import HostnatAddressing
import Foundation
import HostnatPackets
import Testing
import HostnatTestSupport

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
