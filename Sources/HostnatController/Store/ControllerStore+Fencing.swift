import Foundation
import GRDB
public import HostnatProto
import SwiftProtobuf

/// The store's identity and epoch (control.proto rule 1), fabric ids and idempotent grants.
extension StoreReader {
  /// Made when the store was created; a copy restored from a backup keeps it.
  public func storeID() throws -> String {
    try String.fetchOne(db, sql: "SELECT store_id FROM identity LIMIT 1") ?? ""
  }

  /// The controller's current epoch.
  public func epoch() throws -> UInt64 {
    UInt64(clamping: try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'epoch'") ?? 0)
  }

  /// The answer given to a port request with this id from this host, if any (the request is
  /// then a retry: it gets the same answer, never a second block).
  public func portGrant(hostID: String, requestID: String) throws -> Hostnat_V1_PortGrant? {
    guard
      let body = try Data.fetchOne(
        db, sql: "SELECT body FROM port_grant WHERE host_id = ? AND request_id = ?", arguments: [hostID, requestID])
    else { return nil }
    return try Hostnat_V1_PortGrant(serializedBytes: body)
  }
}

extension StoreTransaction {
  /// Starts a new epoch (every controller start, before anything is served) and returns it.
  public func beginEpoch() throws -> UInt64 {
    try db.execute(sql: "UPDATE meta SET value = value + 1 WHERE name = 'epoch'")
    return try reader.epoch()
  }

  /// Makes the epoch greater than `epoch` (a host holds a snapshot of an epoch this store never
  /// reached: it was restored from an older backup). Returns the epoch in force.
  @discardableResult
  public func raiseEpoch(above epoch: UInt64) throws -> UInt64 {
    let bounded = Int64(clamping: epoch)
    try db.execute(
      sql: "UPDATE meta SET value = ? + 1 WHERE name = 'epoch' AND value <= ?", arguments: [bounded, bounded])
    return try reader.epoch()
  }

  /// The next fabric id, never handed out before by this store.
  public func nextFabricID() throws -> UInt32 {
    try db.execute(sql: "UPDATE meta SET value = value + 1 WHERE name = 'fabric_id_counter'")
    let value = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'fabric_id_counter'") ?? 0
    return UInt32(clamping: value)
  }

  /// Makes sure the next fabric id is above `id` (ids given before the counter existed).
  public func raiseFabricIDCounter(to id: UInt32) throws {
    try db.execute(
      sql: "UPDATE meta SET value = max(value, ?) WHERE name = 'fabric_id_counter'", arguments: [Int64(id)])
  }

  /// Remembers the answer to a port request; answers older than `pruneBeforeMs` are forgotten
  /// (a host retries within seconds, never minutes).
  public func recordPortGrant(hostID: String, requestID: String, _ grant: Hostnat_V1_PortGrant, atMs: Int64, pruneBeforeMs: Int64) throws {
    let body: Data = try grant.serializedBytes()
    try db.execute(sql: "DELETE FROM port_grant WHERE at_ms < ?", arguments: [pruneBeforeMs])
    try db.execute(
      sql: "INSERT OR REPLACE INTO port_grant (host_id, request_id, body, at_ms) VALUES (?, ?, ?, ?)",
      arguments: [hostID, requestID, body, atMs])
  }

  /// Records a host's Hello: boot id, features and inventory, which outlive its stream (and a
  /// controller restart) for `hosts list` and the reconciliation of rule 9.
  public func recordHello(_ hello: Hostnat_V1_Hello, kind: Hostnat_V1_HostKind) throws {
    var inventory = Hostnat_V1_Hello()
    inventory.blocks = hello.blocks
    inventory.fenced = hello.fenced
    let body: Data = try inventory.serializedBytes()
    try db.execute(
      sql: "INSERT INTO host (host_id, kind) VALUES (?, ?) ON CONFLICT(kind, host_id) DO NOTHING",
      arguments: [hello.hostID, kind.rawValue])
    try db.execute(
      sql: "UPDATE host SET boot_id = ?, features = ?, inventory = ? WHERE host_id = ? AND kind = ?",
      arguments: [hello.bootID, hello.features.joined(separator: ","), body, hello.hostID, kind.rawValue])
  }

  /// Forgets what a host said it held (`hosts forget`).
  public func forgetInventory(hostID: String, kind: Hostnat_V1_HostKind = .agent) throws {
    try db.execute(sql: "UPDATE host SET inventory = NULL WHERE host_id = ? AND kind = ?", arguments: [hostID, kind.rawValue])
  }
}

extension StoreReader {
  /// The highest fabric id ever given.
  public func fabricIDCounter() throws -> UInt32 {
    UInt32(clamping: try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'fabric_id_counter'") ?? 0)
  }

  /// Answers to port requests still kept, by "host\0request id".
  public func recentPortGrants() throws -> [String: Hostnat_V1_PortGrant] {
    var grants: [String: Hostnat_V1_PortGrant] = [:]
    for row in try Row.fetchAll(db, sql: "SELECT host_id, request_id, body FROM port_grant") {
      let host: String = row["host_id"]
      let request: String = row["request_id"]
      if let grant = try? Hostnat_V1_PortGrant(serializedBytes: row["body"] as Data) { grants["\(host)\u{0}\(request)"] = grant }
    }
    return grants
  }
}
