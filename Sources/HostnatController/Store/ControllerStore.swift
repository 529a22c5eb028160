public import Foundation
import GRDB
public import HostnatProto
public import SwiftProtobuf

/// Why the controller's database could not be used. Each case names the file and the cause so
/// that an operator can act on it without reading code.
public enum StoreError: Error, CustomStringConvertible, Equatable {
  /// The database failed SQLite's integrity check or is not a database at all; the controller
  /// refuses to serve from it rather than push configs computed from damaged intent.
  case corrupt(path: String, detail: String)
  /// The database was written by a newer hostnat whose schema this one does not know.
  case schemaTooNew(path: String, found: Int, supported: Int)
  /// Any other SQLite failure, with SQLite's message.
  case sqlite(String)
  /// A stored record could not be decoded (bad protobuf bytes in a row).
  case undecodable(kind: String, key: String, detail: String)

  public var description: String {
    switch self {
    case .corrupt(let path, let detail):
      "the controller database \(path) is corrupt (\(detail)); refusing to serve from it. Restore it from a backup or move it away to start empty."
    case .schemaTooNew(let path, let found, let supported):
      "the controller database \(path) has schema version \(found), newer than this hostnat supports (\(supported))"
    case .sqlite(let message):
      "database error: \(message)"
    case .undecodable(let kind, let key, let detail):
      "stored \(kind) \(key) cannot be decoded: \(detail)"
    }
  }
}

/// The kinds of intent the controller stores. The raw value is the `kind` column.
public enum ResourceKind: String, Sendable, CaseIterable {
  case network, subnet, router, address, instance
  case firewallRule, route, project, connector, service
}

/// One NAT IP:port block held by one VM NIC, as recorded in the allocation history.
public struct AllocationRecord: Equatable, Sendable {
  /// Row id; stable for the life of the record.
  public var id: Int64
  /// "region/router/nat".
  public var gateway: String
  public var instance: String
  public var nic: String
  public var host: String
  public var natIP: String
  public var firstPort: Int
  public var count: Int
  public var drained: Bool
  /// When the block was granted (Unix ms).
  public var grantedMs: Int64
  /// When it was taken away (Unix ms); nil while held.
  public var releasedMs: Int64?

  public init(
    id: Int64 = 0, gateway: String, instance: String, nic: String, host: String, natIP: String,
    firstPort: Int, count: Int, drained: Bool = false, grantedMs: Int64, releasedMs: Int64? = nil
  ) {
    self.id = id
    self.gateway = gateway
    self.instance = instance
    self.nic = nic
    self.host = host
    self.natIP = natIP
    self.firstPort = firstPort
    self.count = count
    self.drained = drained
    self.grantedMs = grantedMs
    self.releasedMs = releasedMs
  }
}

/// What the controller knows of a host between restarts.
public struct HostRecord: Equatable, Sendable {
  public var hostID: String
  public var kind: Hostnat_V1_HostKind
  /// Newest version computed for the host.
  public var latestVersion: UInt64
  /// Newest version it acknowledged.
  public var ackedVersion: UInt64
  /// Reason of its last NACK, empty after an ACK.
  public var lastNack: String
  public var underlayAddress: String
  /// Epoch of the newest config it acknowledged.
  public var ackedEpoch: UInt64 = 0
  /// From its last Hello: boot id, features, and the blocks it said it held.
  public var bootID: String = ""
  public var features: [String] = []
  public var inventory: [Hostnat_V1_HeldBlock] = []
}

/// Durable intent, allocations and per-host config versions, in one SQLite database (WAL,
/// synchronous=FULL). Every admin change is one `write` transaction covering intent,
/// allocations and the new versions, committed before anything is pushed; so `kill -9` at any
/// moment loses no acknowledged write, and a restart recomputes the same configs.
public final class ControllerStore: Sendable {
  /// Schema version written by this build.
  public static let schemaVersion = 2

  /// Path of the SQLite file.
  public let path: String
  private let queue: DatabaseQueue

  /// Opens (or creates) `hostnat.sqlite` in `directory` and checks it before use.
  public init(directory: String) throws(StoreError) {
    let path = (directory as NSString).appendingPathComponent("hostnat.sqlite")
    self.path = path
    do {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    } catch {
      throw .sqlite("cannot create \(directory): \(error)")
    }
    var config = Configuration()
    config.journalMode = .wal
    config.busyMode = .timeout(5)
    config.prepareDatabase { db in
      // FULL: a commit is on disk before the admin call returns, WAL or not.
      try db.execute(sql: "PRAGMA synchronous = FULL")
    }
    do {
      queue = try DatabaseQueue(path: path, configuration: config)
    } catch let error as DatabaseError where Self.isCorruption(error) {
      throw .corrupt(path: path, detail: error.message ?? "\(error)")
    } catch {
      throw .sqlite("cannot open \(path): \(error)")
    }
    try checkIntegrity()
    try migrate()
  }

  private static func isCorruption(_ error: DatabaseError) -> Bool {
    error.resultCode == .SQLITE_CORRUPT || error.resultCode == .SQLITE_NOTADB
  }

  private func checkIntegrity() throws(StoreError) {
    do {
      let rows = try queue.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check") }
      if rows != ["ok"] {
        throw StoreError.corrupt(path: path, detail: rows.prefix(3).joined(separator: "; "))
      }
    } catch let error as StoreError {
      throw error
    } catch let error as DatabaseError where Self.isCorruption(error) {
      throw .corrupt(path: path, detail: error.message ?? "\(error)")
    } catch {
      throw .sqlite("\(error)")
    }
  }

  private func migrate() throws(StoreError) {
    let found: Int
    do {
      found = try queue.read { db in try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0 }
    } catch {
      throw .sqlite("\(error)")
    }
    if found > Self.schemaVersion {
      throw .schemaTooNew(path: path, found: found, supported: Self.schemaVersion)
    }
    var migrator = DatabaseMigrator()
    migrator.registerMigration("v1") { db in
      try db.execute(sql: """
        CREATE TABLE resource (
          kind TEXT NOT NULL,
          key TEXT NOT NULL,
          body BLOB NOT NULL,
          PRIMARY KEY (kind, key)
        );
        CREATE TABLE allocation (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          gateway TEXT NOT NULL,
          instance TEXT NOT NULL,
          nic TEXT NOT NULL,
          host TEXT NOT NULL,
          nat_ip TEXT NOT NULL,
          first_port INTEGER NOT NULL,
          count INTEGER NOT NULL,
          drained INTEGER NOT NULL DEFAULT 0,
          granted_ms INTEGER NOT NULL,
          released_ms INTEGER
        );
        CREATE INDEX allocation_by_block ON allocation (nat_ip, first_port);
        CREATE INDEX allocation_live ON allocation (released_ms) WHERE released_ms IS NULL;
        CREATE TABLE host (
          host_id TEXT PRIMARY KEY,
          kind INTEGER NOT NULL,
          latest_version INTEGER NOT NULL DEFAULT 0,
          acked_version INTEGER NOT NULL DEFAULT 0,
          last_nack TEXT NOT NULL DEFAULT '',
          underlay TEXT NOT NULL DEFAULT '',
          config BLOB
        );
        CREATE TABLE meta (
          name TEXT PRIMARY KEY,
          value INTEGER NOT NULL
        );
        INSERT INTO meta (name, value) VALUES ('version_counter', 0);
        CREATE TABLE snapshot (
          name TEXT PRIMARY KEY,
          body BLOB NOT NULL
        );
        PRAGMA user_version = 1;
        """)
    }
    // v2 (ownership safety): the store's identity and epoch, fabric ids that are never reused,
    // idempotent port grants, and hosts and edges in one table without sharing ids.
    migrator.registerMigration("v2") { db in
      try db.execute(sql: """
        CREATE TABLE host_v2 (
          host_id TEXT NOT NULL,
          kind INTEGER NOT NULL,
          latest_version INTEGER NOT NULL DEFAULT 0,
          acked_version INTEGER NOT NULL DEFAULT 0,
          acked_epoch INTEGER NOT NULL DEFAULT 0,
          last_nack TEXT NOT NULL DEFAULT '',
          underlay TEXT NOT NULL DEFAULT '',
          config BLOB,
          boot_id TEXT NOT NULL DEFAULT '',
          features TEXT NOT NULL DEFAULT '',
          inventory BLOB,
          PRIMARY KEY (kind, host_id)
        );
        INSERT INTO host_v2 (host_id, kind, latest_version, acked_version, last_nack, underlay, config)
          SELECT host_id, kind, latest_version, acked_version, last_nack, underlay, config FROM host;
        DROP TABLE host;
        ALTER TABLE host_v2 RENAME TO host;
        CREATE TABLE identity (store_id TEXT NOT NULL);
        INSERT INTO identity (store_id) VALUES (lower(hex(randomblob(16))));
        INSERT INTO meta (name, value) VALUES ('epoch', 0), ('fabric_id_counter', 0);
        CREATE TABLE port_grant (
          host_id TEXT NOT NULL,
          request_id TEXT NOT NULL,
          body BLOB NOT NULL,
          at_ms INTEGER NOT NULL,
          PRIMARY KEY (host_id, request_id)
        );
        PRAGMA user_version = 2;
        """)
    }
    do {
      try migrator.migrate(queue)
    } catch {
      throw .sqlite("migration failed: \(error)")
    }
  }

  /// Runs `body` as one transaction: all of it is durable when this returns, or none of it.
  /// Blocks the calling thread through the fsync: for startup, tools and tests. Work on the
  /// cooperative pool uses `commit`.
  public func write<T>(_ body: (StoreTransaction) throws -> T) throws -> T {
    try queue.write { db in try body(StoreTransaction(db: db)) }
  }

  /// Runs `body` against a consistent snapshot, blocking the calling thread (see `write`).
  public func read<T>(_ body: (StoreReader) throws -> T) throws -> T {
    try queue.read { db in try body(StoreReader(db: db)) }
  }

  /// `write` on the database's own serial queue: the caller suspends instead of blocking a
  /// thread of the cooperative pool through SQLite's fsync (synchronous=FULL). Transactions run
  /// one at a time in the order they were asked for; all of one is durable when this returns,
  /// or none of it.
  public func commit<T: Sendable>(_ body: @escaping @Sendable (StoreTransaction) throws -> T) async throws -> T {
    // In a task of its own, which the caller's cancellation does not reach: GRDB would interrupt
    // a cancelled write, and a change once asked for is carried through, as a blocking write was.
    let queue = self.queue
    return try await Task { try await queue.write { db in try body(StoreTransaction(db: db)) } }.value
  }

  /// `read` on the database's own serial queue, suspending the caller (see `commit`).
  public func fetch<T: Sendable>(_ body: @escaping @Sendable (StoreReader) throws -> T) async throws -> T {
    try await queue.read { db in try body(StoreReader(db: db)) }
  }
}

/// Read access inside `ControllerStore.read` or `write`.
public struct StoreReader {
  let db: Database

  /// The stored resource of `kind` under `key`, or nil.
  public func resource<M: SwiftProtobuf.Message>(_ kind: ResourceKind, key: String, as type: M.Type) throws -> M? {
    guard let body = try Data.fetchOne(db, sql: "SELECT body FROM resource WHERE kind = ? AND key = ?", arguments: [kind.rawValue, key]) else {
      return nil
    }
    return try decode(type, kind: kind, key: key, body: body)
  }

  /// Every stored resource of `kind`, ordered by key.
  public func resources<M: SwiftProtobuf.Message>(_ kind: ResourceKind, as type: M.Type) throws -> [M] {
    let rows = try Row.fetchAll(db, sql: "SELECT key, body FROM resource WHERE kind = ? ORDER BY key", arguments: [kind.rawValue])
    return try rows.map { row in try decode(type, kind: kind, key: row["key"], body: row["body"]) }
  }

  private func decode<M: SwiftProtobuf.Message>(_ type: M.Type, kind: ResourceKind, key: String, body: Data) throws -> M {
    do {
      return try M(serializedBytes: body)
    } catch {
      throw StoreError.undecodable(kind: kind.rawValue, key: key, detail: "\(error)")
    }
  }

  /// Blocks held now (not released), ordered by id, i.e. by grant order.
  public func liveAllocations() throws -> [AllocationRecord] {
    try Row.fetchAll(db, sql: "SELECT * FROM allocation WHERE released_ms IS NULL ORDER BY id").map(AllocationRecord.init(row:))
  }

  /// Every record whose block contains `natIP:port` and that was held at `atMs`.
  public func allocations(holding natIP: String, port: Int, atMs: Int64) throws -> [AllocationRecord] {
    try Row.fetchAll(
      db,
      sql: """
        SELECT * FROM allocation
        WHERE nat_ip = ? AND first_port <= ? AND first_port + count > ?
          AND granted_ms <= ? AND (released_ms IS NULL OR released_ms > ?)
        ORDER BY id
        """,
      arguments: [natIP, port, port, atMs, atMs]
    ).map(AllocationRecord.init(row:))
  }

  /// The record of a host (an agent unless `kind` says otherwise), or nil if it never connected
  /// and has no VMs. Agents and edges have their own ids: an edge named like a host is another.
  public func host(_ hostID: String, kind: Hostnat_V1_HostKind = .agent) throws -> HostRecord? {
    try Row.fetchOne(db, sql: "SELECT * FROM host WHERE host_id = ? AND kind = ?", arguments: [hostID, kind.rawValue])
      .map(HostRecord.init(row:))
  }

  /// Every known host and edge, by id (then kind).
  public func hosts() throws -> [HostRecord] {
    try Row.fetchAll(db, sql: "SELECT * FROM host ORDER BY host_id, kind").map(HostRecord.init(row:))
  }

  /// The newest config computed for the host (an agent).
  public func hostConfig(_ hostID: String) throws -> Hostnat_V1_HostConfig? {
    guard
      let body = try Data.fetchOne(
        db, sql: "SELECT config FROM host WHERE host_id = ? AND kind = ? AND config IS NOT NULL",
        arguments: [hostID, Hostnat_V1_HostKind.agent.rawValue])
    else {
      return nil
    }
    return try decode(Hostnat_V1_HostConfig.self, kind: "hostConfig", key: hostID, body: body)
  }

  private func decode<M: SwiftProtobuf.Message>(_ type: M.Type, kind: String, key: String, body: Data) throws -> M {
    do {
      return try M(serializedBytes: body)
    } catch {
      throw StoreError.undecodable(kind: kind, key: key, detail: "\(error)")
    }
  }

  /// The newest routing snapshot for the edge.
  public func edgeConfig() throws -> Hostnat_V1_EdgeConfig? {
    guard let body = try snapshot("edge") else { return nil }
    return try decode(Hostnat_V1_EdgeConfig.self, kind: "edgeConfig", key: "edge", body: body)
  }

  /// A named blob stored with `putSnapshot`.
  public func snapshot(_ name: String) throws -> Data? {
    try Data.fetchOne(db, sql: "SELECT body FROM snapshot WHERE name = ?", arguments: [name])
  }

  /// The highest version ever handed out; versions only go up, also across restarts.
  public func versionCounter() throws -> UInt64 {
    UInt64(clamping: try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'version_counter'") ?? 0)
  }
}

/// Write access inside `ControllerStore.write`; everything it does commits together.
public struct StoreTransaction {
  let db: Database

  /// Reads within the same transaction.
  public var reader: StoreReader { StoreReader(db: db) }

  /// Inserts or replaces a resource.
  public func put(_ kind: ResourceKind, key: String, _ message: some SwiftProtobuf.Message) throws {
    let body: Data = try message.serializedBytes()
    try db.execute(sql: "INSERT OR REPLACE INTO resource (kind, key, body) VALUES (?, ?, ?)", arguments: [kind.rawValue, key, body])
  }

  /// Removes a resource; returns whether it existed.
  @discardableResult
  public func delete(_ kind: ResourceKind, key: String) throws -> Bool {
    try db.execute(sql: "DELETE FROM resource WHERE kind = ? AND key = ?", arguments: [kind.rawValue, key])
    return db.changesCount > 0
  }

  /// Records a newly granted block and returns its id.
  @discardableResult
  public func grant(_ record: AllocationRecord) throws -> Int64 {
    try db.execute(
      sql: """
        INSERT INTO allocation (gateway, instance, nic, host, nat_ip, first_port, count, drained, granted_ms)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
      arguments: [record.gateway, record.instance, record.nic, record.host, record.natIP, record.firstPort, record.count, record.drained, record.grantedMs])
    return db.lastInsertedRowID
  }

  /// Marks a held block released at `atMs`; the history keeps it for who-had.
  public func release(id: Int64, atMs: Int64) throws {
    try db.execute(sql: "UPDATE allocation SET released_ms = ? WHERE id = ? AND released_ms IS NULL", arguments: [atMs, id])
  }

  /// Marks a held block drained or active again.
  public func setDrained(id: Int64, _ drained: Bool) throws {
    try db.execute(sql: "UPDATE allocation SET drained = ? WHERE id = ?", arguments: [drained, id])
  }

  /// Takes the next version from the global counter. One counter for all hosts keeps versions
  /// unique and monotonic per host without a per-host read-modify-write.
  public func nextVersion() throws -> UInt64 {
    try db.execute(sql: "UPDATE meta SET value = value + 1 WHERE name = 'version_counter'")
    return try reader.versionCounter()
  }

  /// Makes sure the next version handed out is above `version`: a host that holds a version
  /// this database never issued (restored from an older backup) must still see versions rise.
  public func raiseVersionCounter(above version: UInt64) throws {
    try db.execute(
      sql: "UPDATE meta SET value = max(value, ?) WHERE name = 'version_counter'", arguments: [Int64(clamping: version)])
  }

  /// Stores the newest routing snapshot for the edge.
  public func setEdgeConfig(_ config: Hostnat_V1_EdgeConfig) throws {
    try putSnapshot("edge", try config.serializedBytes())
  }

  /// Stores a named blob (the edge config, the planner's snapshot).
  public func putSnapshot(_ name: String, _ body: Data) throws {
    try db.execute(sql: "INSERT OR REPLACE INTO snapshot (name, body) VALUES (?, ?)", arguments: [name, body])
  }

  /// Stores the newest config computed for a host (creating the host's record if needed).
  public func setHostConfig(_ config: Hostnat_V1_HostConfig, kind: Hostnat_V1_HostKind) throws {
    let body: Data = try config.serializedBytes()
    try db.execute(
      sql: """
        INSERT INTO host (host_id, kind, latest_version, config) VALUES (?, ?, ?, ?)
        ON CONFLICT(kind, host_id) DO UPDATE SET latest_version = excluded.latest_version, config = excluded.config
        """,
      arguments: [config.hostID, kind.rawValue, Int64(clamping: config.version), body])
  }

  /// Records an ACK (clears the NACK reason) or a NACK from a host. Versions here are the
  /// controller's own (matched by nonce), never a number taken from the wire.
  public func recordResponse(
    hostID: String, kind: Hostnat_V1_HostKind, ackedVersion: UInt64?, ackedEpoch: UInt64 = 0, nack: String?, underlay: String?
  ) throws {
    try db.execute(
      sql: "INSERT INTO host (host_id, kind) VALUES (?, ?) ON CONFLICT(kind, host_id) DO NOTHING",
      arguments: [hostID, kind.rawValue])
    let key: StatementArguments = [hostID, kind.rawValue]
    if let ackedVersion {
      try db.execute(
        sql: "UPDATE host SET acked_version = max(acked_version, ?), acked_epoch = max(acked_epoch, ?), last_nack = '' WHERE host_id = ? AND kind = ?",
        arguments: [Int64(clamping: ackedVersion), Int64(clamping: ackedEpoch)] + key)
    }
    if let nack {
      try db.execute(sql: "UPDATE host SET last_nack = ? WHERE host_id = ? AND kind = ?", arguments: [nack] + key)
    }
    if let underlay {
      try db.execute(sql: "UPDATE host SET underlay = ? WHERE host_id = ? AND kind = ?", arguments: [underlay] + key)
    }
  }
}

extension AllocationRecord {
  init(row: Row) {
    self.init(
      id: row["id"], gateway: row["gateway"], instance: row["instance"], nic: row["nic"], host: row["host"],
      natIP: row["nat_ip"], firstPort: row["first_port"], count: row["count"], drained: row["drained"],
      grantedMs: row["granted_ms"], releasedMs: row["released_ms"])
  }
}

extension HostRecord {
  init(row: Row) {
    let kind: Int = row["kind"]
    self.init(
      hostID: row["host_id"], kind: Hostnat_V1_HostKind(rawValue: kind) ?? .unspecified,
      latestVersion: UInt64(clamping: row["latest_version"] as Int64), ackedVersion: UInt64(clamping: row["acked_version"] as Int64),
      lastNack: row["last_nack"], underlayAddress: row["underlay"], ackedEpoch: UInt64(clamping: row["acked_epoch"] as Int64),
      bootID: row["boot_id"], features: (row["features"] as String).split(separator: ",").map(String.init),
      inventory: (row["inventory"] as Data?).flatMap { try? Hostnat_V1_Hello(serializedBytes: $0) }?.blocks ?? [])
  }
}
