import Foundation
import HostnatAddressing
import HostnatControlRules
import HostnatProto
import SwiftProtobuf
import Testing

/// Control.proto rule 1: what a host does with an offered token, by what it holds.
@Suite struct FencingTokenTests {
  static let cases: [(held: FencingToken, offered: FencingToken, expected: String)] = [
    (FencingToken(epoch: 2, version: 10, digest: "aa"), FencingToken(epoch: 2, version: 11, digest: "bb"), "apply"),
    (FencingToken(epoch: 2, version: 10, digest: "aa"), FencingToken(epoch: 3, version: 1, digest: "bb"), "apply"),
    (FencingToken(epoch: 2, version: 10, digest: "aa"), FencingToken(epoch: 2, version: 10, digest: "aa"), "unchanged"),
    (FencingToken(epoch: 2, version: 10, digest: "aa"), FencingToken(epoch: 2, version: 10, digest: "bb"), "digest mismatch"),
    (FencingToken(epoch: 2, version: 10, digest: "aa"), FencingToken(epoch: 2, version: 9, digest: "bb"), "stale"),
    // A restored store reissuing a high version under an old epoch is still older.
    (FencingToken(epoch: 3, version: 5, digest: "aa"), FencingToken(epoch: 2, version: 99, digest: "bb"), "stale"),
    (.none, FencingToken(epoch: 1, version: 1, digest: "aa"), "apply"),
  ]

  @Test(arguments: cases.indices)
  func verdict(_ i: Int) {
    let (held, offered, expected) = Self.cases[i]
    switch held.verdict(on: offered) {
    case .apply: #expect(expected == "apply")
    case .unchanged: #expect(expected == "unchanged")
    case .refuse(let reason): #expect(reason.hasPrefix(expected), "\(reason)")
    }
  }

  @Test func digestIgnoresStampsAndSeesContent() {
    var a = Hostnat_V1_HostConfig.with { $0.hostID = "host-a"; $0.ownershipLeaseSec = 60 }
    var b = a
    b.version = 7
    b.epoch = 3
    b.generatedMs = 123
    b.storeID = "x"
    #expect(ConfigDigest.of(a) == ConfigDigest.of(b))
    #expect(ConfigDigest.of(a).count == 32)
    a.ownershipLeaseSec = 61
    #expect(ConfigDigest.of(a) != ConfigDigest.of(b))
  }

  @Test func featuresOfABaseHostAndMissingOnes() {
    let config = Hostnat_V1_HostConfig.with {
      $0.fencingMode = .lease
      $0.firewallRules = [.with { $0.targetTags = ["web"] }]
    }
    let required = ProtocolFeature.required(by: config)
    #expect(required == [ProtocolFeature.targetTags, ProtocolFeature.fencing].sorted())
    #expect(ProtocolFeature.missing(required, from: ProtocolFeature.base) == [ProtocolFeature.fencing])
    #expect(ProtocolFeature.missing(required, from: ProtocolFeature.supported).isEmpty)
    #expect(ProtocolFeature.missing(required, from: [ProtocolFeature.fencing]) == [ProtocolFeature.targetTags])
  }
}

/// Control.proto rule 14: every numeric field of every message a host sends, at its extremes,
/// is either accepted or refused with the field's name, never a trap; the table is checked
/// against control.proto so a numeric field added later without a case fails here.
@Suite struct WireBoundsTests {
  typealias Mutation = (inout Hostnat_V1_AgentMessage) -> Void

  /// Field (as control.proto spells it, message.field) → how to set it, per extreme value.
  static func mutations(_ u64: UInt64, _ u32: UInt32, _ i64: Int64) -> [(field: String, set: Mutation, accepted: Bool)] {
    let bigVersion = u64 > WireBounds.maxVersion
    let badPorts = u32 > 65_536
    return [
      ("Hello.applied_version", { $0.hello.appliedVersion = u64 }, !bigVersion),
      ("Hello.applied_epoch", { $0.hello.appliedEpoch = u64 }, !bigVersion),
      ("HeldBlock.first_port", { $0.hello.blocks = [.with { $0.natIp = "203.0.113.1"; $0.firstPort = u32; $0.count = 1 }] }, u32 <= 65_535),
      ("HeldBlock.count", { $0.hello.blocks = [.with { $0.natIp = "203.0.113.1"; $0.firstPort = 1024; $0.count = u32 }] }, u32 >= 1 && u32 <= 64_512),
      ("HeldBlock.state", { $0.hello.blocks = [.with { $0.natIp = "203.0.113.1"; $0.firstPort = 1024; $0.count = 1; $0.state = .init(rawValue: Int(u32 % 5)) ?? .blockActive }] }, u32 % 5 < 4),
      ("Ack.version", { $0.ack = .with { $0.version = u64 } }, !bigVersion),
      ("Ack.epoch", { $0.ack = .with { $0.epoch = u64 } }, !bigVersion),
      ("Nack.version", { $0.nack = .with { $0.version = u64 } }, !bigVersion),
      ("Nack.applied_version", { $0.nack = .with { $0.appliedVersion = u64 } }, !bigVersion),
      ("Nack.epoch", { $0.nack = .with { $0.epoch = u64 } }, !bigVersion),
      ("Heartbeat.sent_ms", { $0.heartbeat = .with { $0.sentMs = i64 } }, true),
      ("PortUsageReport.applied_version", { $0.usage = .with { $0.appliedVersion = u64 } }, !bigVersion),
      ("PortUsageReport.applied_epoch", { $0.usage = .with { $0.appliedEpoch = u64 } }, !bigVersion),
      ("NicPortUsage.ports_allocated", { $0.usage = .with { $0.nics = [.with { $0.portsAllocated = u32 }] } }, !badPorts),
      ("NicPortUsage.ports_in_use", { $0.usage = .with { $0.nics = [.with { $0.portsInUse = u32 }] } }, !badPorts),
      ("NicPortUsage.max_connections_to_one_destination", { $0.usage = .with { $0.nics = [.with { $0.maxConnectionsToOneDestination = u32 }] } }, true),
      ("PortBlock.first_port", { $0.usage = .with { $0.nics = [.with { $0.idleBlocks = [.with { $0.firstPort = u32; $0.count = 1 }] }] } }, u32 <= 65_535),
      ("PortBlock.count", { $0.usage = .with { $0.nics = [.with { $0.idleBlocks = [.with { $0.firstPort = 1024; $0.count = u32 }] }] } }, u32 >= 1 && u32 <= 64_512),
      ("PortBlock.rule_number", { $0.usage = .with { $0.nics = [.with { $0.idleBlocks = [.with { $0.firstPort = 1024; $0.count = 1; $0.ruleNumber = u32 }] }] } }, true),
      ("PortRequest.ports_allocated", { $0.portRequest = .with { $0.requestID = "r"; $0.portsAllocated = u32 } }, !badPorts),
    ]
  }

  static let extremes: [(UInt64, UInt32, Int64)] = [
    (0, 0, .min), (1, 1, -1), (WireBounds.maxVersion, 65_535, 0), (WireBounds.maxVersion + 1, 65_536, 1),
    (UInt64(Int64.max), 65_537, .max), (UInt64(Int64.max) + 1, UInt32.max, .max), (.max, UInt32.max - 1, .min),
  ]

  @Test(arguments: extremes.indices)
  func extremeValuesAreRefusedWithTheFieldOrAccepted(_ i: Int) throws {
    let (u64, u32, i64) = Self.extremes[i]
    for (field, set, accepted) in Self.mutations(u64, u32, i64) {
      var message = Hostnat_V1_AgentMessage()
      if field.hasPrefix("Hello") || field.hasPrefix("HeldBlock") { message.hello.hostID = "host-a" }
      set(&message)
      // Through the wire format, as a client would send it.
      let decoded = try Hostnat_V1_AgentMessage(serializedBytes: try message.serializedBytes() as [UInt8])
      do {
        try WireBounds.check(decoded)
        #expect(accepted, "\(field) = \(u64)/\(u32)/\(i64) was accepted")
      } catch {
        #expect(!accepted, "\(field) = \(u64)/\(u32)/\(i64) was refused: \(error)")
        #expect(!error.field.isEmpty && !error.reason.isEmpty)
      }
      // The edge's stream shares hello, ack and nack.
      if let edge = Self.asEdge(decoded) {
        #expect((try? WireBounds.check(edge)) != nil || !accepted)
      }
    }
  }

  static func asEdge(_ message: Hostnat_V1_AgentMessage) -> Hostnat_V1_EdgeMessage? {
    switch message.message {
    case .hello(let h)?: .with { $0.hello = h }
    case .ack(let a)?: .with { $0.ack = a }
    case .nack(let n)?: .with { $0.nack = n }
    default: nil
    }
  }

  /// Every numeric field of every message a host can send is in the table above.
  @Test func tableCoversEveryNumericFieldOfHostMessages() throws {
    let proto = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("proto/hostnat/v1/control.proto")
    let text = try String(contentsOf: proto, encoding: .utf8)
    let sent = ["Hello", "HeldBlock", "Ack", "Nack", "Heartbeat", "PortUsageReport", "NicPortUsage", "PortBlock", "PortRequest"]
    var numeric: Set<String> = []
    var current: String?
    for line in text.split(separator: "\n") {
      let trimmed = line.trimmingCharacters(in: .whitespaces)
      if trimmed.hasPrefix("message ") { current = String(trimmed.dropFirst(8).prefix { $0 != " " }) }
      if trimmed == "}" { current = nil }
      guard let current, sent.contains(current) else { continue }
      let words = trimmed.split(separator: " ")
      guard words.count >= 2, ["uint32", "uint64", "int32", "int64", "BlockState"].contains(String(words[0])) else { continue }
      numeric.insert("\(current).\(words[1])")
    }
    let covered = Set(Self.mutations(0, 0, 0).map(\.field))
    #expect(numeric.count >= 15, "the parser found the fields: \(numeric.sorted())")
    #expect(numeric.subtracting(covered).isEmpty, "numeric fields without an extreme-value case: \(numeric.subtracting(covered).sorted())")
  }
}
