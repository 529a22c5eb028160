import Foundation
import HostnatControlRules
import HostnatController
import HostnatProto
import SwiftProtobuf
import Testing

/// Control.proto rules 1 and 9 against a controller restored from an old backup: its epoch
/// still rises, and a block a host holds that the old store gives to another host is withheld
/// from both until the holder ACKs a config without it.
@Suite struct RestoreFromBackupTests {
  func copyStore(from: String, to: String) throws {
    try FileManager.default.createDirectory(atPath: to, withIntermediateDirectories: true)
    for name in try FileManager.default.contentsOfDirectory(atPath: from) where name.hasPrefix("hostnat.sqlite") {
      try FileManager.default.copyItem(atPath: from + "/" + name, toPath: to + "/" + name)
    }
  }

  func blocks(_ config: Hostnat_V1_HostConfig?) -> Set<BlockKey> {
    Set(config?.vms.flatMap { $0.nics.flatMap { $0.natBindings.flatMap { $0.portBlocks.map(\.key) } } } ?? [])
  }

  @Test func heldBlockIsWithheldFromTheOldOwnerUntilTheHolderLetsGo() async throws {
    let live = TempDir()
    let backup = TempDir()
    let clock = ControllerCoreTests.Clock()
    let rules = OwnershipRuleTests()
    // The backup: vm-1 on host-a holds the only block.
    var block: BlockKey
    var liveEpoch: UInt64
    do {
      let core = try ControllerCoreTests().core(live, clock: clock)
      try await core.change { $0 = rules.oneSlotIntent() }
      block = try #require(blocks(try core.store.read { try $0.hostConfig("host-a") }).first)
      try copyStore(from: live.path, to: backup.path)
      // After the backup the block moves: vm-1 goes, host-a ACKs, vm-3 on host-c gets it.
      let removal = try await rules.replaceVM(core)
      try await core.hostAcknowledged("host-a", version: try #require(removal.hostVersions["host-a"]))
      #expect(blocks(try core.store.read { try $0.hostConfig("host-c") }) == [block])
      liveEpoch = core.startEpoch
    }
    // The backup comes back: it still gives the block to host-a.
    let restored = try ControllerCoreTests().core(backup, clock: clock)
    #expect(blocks(try restored.store.read { try $0.hostConfig("host-a") }) == [block])
    #expect(restored.startEpoch == liveEpoch + 1, "every start is a new epoch, also from a backup")
    // host-a has a data-plane address, so the edge routes its block to it.
    try restored.store.write { try $0.recordResponse(hostID: "host-a", kind: .agent, ackedVersion: nil, nack: nil, underlay: "127.0.0.1:40001") }
    try await restored.refreshEdge()
    func routed() throws -> Bool {
      try #require(try restored.store.read { try $0.edgeConfig() }).natRoutes.contains {
        $0.natIp == block.natIP && $0.firstPort == block.firstPort && $0.hostID == "host-a"
      }
    }
    #expect(try routed())
    // host-c says hello holding the block (and a config of the live controller's epoch).
    let hello = Hostnat_V1_Hello.with {
      $0.hostID = "host-c"
      $0.bootID = "b"
      $0.appliedEpoch = liveEpoch
      $0.appliedVersion = 99
      $0.blocks = [.with { $0.natIp = block.natIP; $0.firstPort = block.firstPort; $0.count = block.count; $0.state = .blockActive }]
    }
    try await restored.helloReceived(hello, kind: .agent)
    #expect(restored.conflicts == [OwnershipConflict(block: block, holder: "host-c", owner: "host-a")])
    #expect(blocks(try restored.store.read { try $0.hostConfig("host-a") }).isEmpty, "withheld from the store's owner")
    #expect(try !routed(), "and from the edge's routes")

    // host-c is answered (the restored store never knew it: an empty config, as a hello gets)
    // and ACKs it: it holds no block now, the conflict is resolved and host-a gets its block back.
    #expect(try restored.store.read { try $0.hostConfig("host-c") } == nil)
    let empty = try restored.store.write { tx in
      var config = Hostnat_V1_HostConfig.with { $0.hostID = "host-c" }
      config.version = try tx.nextVersion()
      try tx.setHostConfig(config, kind: .agent)
      return config
    }
    try await restored.hostAcknowledged("host-c", version: empty.version)
    #expect(restored.conflicts.isEmpty)
    #expect(blocks(try restored.store.read { try $0.hostConfig("host-a") }) == [block])
    #expect(try routed())
  }
}
