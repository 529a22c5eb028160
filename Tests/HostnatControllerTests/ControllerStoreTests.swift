import Foundation
import HostnatController
import HostnatProto
import Testing

/// A fresh directory per test, removed afterwards.
struct TempDir: ~Copyable {
  let path: String
  init() {
    path = FileManager.default.temporaryDirectory.appendingPathComponent("hostnat-store-\(UUID().uuidString)").path
  }
  deinit { try? FileManager.default.removeItem(atPath: path) }
}

@Suite struct ControllerStoreTests {
  @Test func resourcesSurviveReopen() throws {
    let dir = TempDir()
    do {
      let store = try ControllerStore(directory: dir.path)
      try store.write { tx in
        var network = Hostnat_V1_Network()
        network.name = "vpc-1"
        network.description_p = "first"
        try tx.put(.network, key: "vpc-1", network)
        var subnet = Hostnat_V1_Subnet()
        subnet.name = "subnet-1"
        subnet.ipCidrRange = "10.0.0.0/24"
        try tx.put(.subnet, key: "us-east1/subnet-1", subnet)
      }
    }
    let reopened = try ControllerStore(directory: dir.path)
    let network = try reopened.read { try $0.resource(.network, key: "vpc-1", as: Hostnat_V1_Network.self) }
    #expect(network?.description_p == "first")
    let subnets = try reopened.read { try $0.resources(.subnet, as: Hostnat_V1_Subnet.self) }
    #expect(subnets.map(\.ipCidrRange) == ["10.0.0.0/24"])
    #expect(try reopened.read { try $0.resource(.network, key: "absent", as: Hostnat_V1_Network.self) } == nil)
  }

  /// A transaction that throws leaves nothing behind: one admin change is all or nothing.
  @Test func failedTransactionChangesNothing() throws {
    struct Rejected: Error {}
    let dir = TempDir()
    let store = try ControllerStore(directory: dir.path)
    #expect(throws: Rejected.self) {
      try store.write { tx in
        var network = Hostnat_V1_Network()
        network.name = "vpc-1"
        try tx.put(.network, key: "vpc-1", network)
        _ = try tx.nextVersion()
        throw Rejected()
      }
    }
    #expect(try store.read { try $0.resources(.network, as: Hostnat_V1_Network.self) }.isEmpty)
    #expect(try store.read { try $0.versionCounter() } == 0)
  }

  /// Versions only go up, across reopen too.
  @Test func versionsAreMonotonicAcrossRestarts() throws {
    let dir = TempDir()
    var seen: [UInt64] = []
    for _ in 0..<3 {
      let store = try ControllerStore(directory: dir.path)
      seen.append(try store.write { try $0.nextVersion() })
      seen.append(try store.write { try $0.nextVersion() })
    }
    #expect(seen == [1, 2, 3, 4, 5, 6])
  }

  /// who-had answers from history: the block's holder at a time, including after release and
  /// after a new owner took it.
  @Test func allocationHistoryAnswersWhoHad() throws {
    let dir = TempDir()
    let store = try ControllerStore(directory: dir.path)
    let first = try store.write { tx in
      try tx.grant(AllocationRecord(
        id: 0, gateway: "us-east1/r1/nat1", instance: "vm-a", nic: "nic0", host: "host-a",
        natIP: "203.0.113.1", firstPort: 1024, count: 64, drained: false, grantedMs: 1_000, releasedMs: nil))
    }
    try store.write { tx in
      try tx.release(id: first, atMs: 5_000)
      try tx.grant(AllocationRecord(
        id: 0, gateway: "us-east1/r1/nat1", instance: "vm-b", nic: "nic0", host: "host-b",
        natIP: "203.0.113.1", firstPort: 1024, count: 64, drained: false, grantedMs: 6_000, releasedMs: nil))
    }
    let cases: [(port: Int, at: Int64, expected: [String])] = [
      (1024, 500, []),
      (1024, 1_000, ["vm-a"]),
      (1087, 4_999, ["vm-a"]),
      (1088, 4_999, []),
      (1050, 5_500, []),
      (1050, 6_000, ["vm-b"]),
      (1050, 99_999, ["vm-b"]),
    ]
    for item in cases {
      let holders = try store.read { try $0.allocations(holding: "203.0.113.1", port: item.port, atMs: item.at) }
      #expect(holders.map(\.instance) == item.expected, "port \(item.port) at \(item.at)")
    }
    let live = try store.read { try $0.liveAllocations() }
    #expect(live.map(\.instance) == ["vm-b"])
  }

  @Test func hostRecordsTrackVersionsAndResponses() throws {
    let dir = TempDir()
    let store = try ControllerStore(directory: dir.path)
    try store.write { tx in
      var config = Hostnat_V1_HostConfig()
      config.hostID = "host-a"
      config.version = try tx.nextVersion()
      try tx.setHostConfig(config, kind: .agent)
      try tx.recordResponse(hostID: "host-a", kind: .agent, ackedVersion: nil, nack: "stale version 0 < 3", underlay: "127.0.0.1:4000")
    }
    var host = try #require(try store.read { try $0.host("host-a") })
    #expect(host.latestVersion == 1)
    #expect(host.ackedVersion == 0)
    #expect(host.lastNack == "stale version 0 < 3")
    #expect(host.underlayAddress == "127.0.0.1:4000")
    try store.write { tx in
      try tx.recordResponse(hostID: "host-a", kind: .agent, ackedVersion: 1, nack: nil, underlay: nil)
      // An old ACK arriving late never moves the acked version back.
      try tx.recordResponse(hostID: "host-a", kind: .agent, ackedVersion: 0, nack: nil, underlay: nil)
    }
    host = try #require(try store.read { try $0.host("host-a") })
    #expect(host.ackedVersion == 1)
    #expect(host.lastNack == "")
    #expect(try store.read { try $0.hostConfig("host-a") }?.version == 1)
  }

  /// A damaged database is refused with a message that says so, never served: a wrecked
  /// header (not a database at all) and a wrecked data page (caught by the integrity check).
  @Test(arguments: [UInt64(0), UInt64(8192)])
  func corruptDatabaseIsRefused(damageAt offset: UInt64) throws {
    let dir = TempDir()
    do {
      let store = try ControllerStore(directory: dir.path)
      try store.write { tx in
        for index in 0..<200 {
          var network = Hostnat_V1_Network()
          network.name = "vpc-\(index)"
          network.description_p = String(repeating: "x", count: 200)
          try tx.put(.network, key: network.name, network)
        }
      }
    }
    let path = (dir.path as NSString).appendingPathComponent("hostnat.sqlite")
    // Merge the WAL into the main file first so the damage below hits real data.
    _ = try? FileManager.default.removeItem(atPath: path + "-wal")
    _ = try? FileManager.default.removeItem(atPath: path + "-shm")
    let handle = try #require(FileHandle(forUpdatingAtPath: path))
    try handle.seek(toOffset: offset)
    try handle.write(contentsOf: Data(repeating: 0xA5, count: 4096))
    try handle.close()
    do {
      _ = try ControllerStore(directory: dir.path)
      Issue.record("a corrupt database was opened")
    } catch {
      #expect("\(error)".contains("corrupt"), "\(error)")
      #expect("\(error)".contains(path), "\(error)")
    }
  }
}
