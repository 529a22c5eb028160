import HostnatAddressing
import Foundation
public import HostnatDataplane
public import HostnatInternet

/// Writes a small JSON status document atomically, for `hostnat lab status` and friends to read.
public enum StatusFile {
  public static func write<T: Encodable>(_ value: T, to path: String) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    guard let data = try? encoder.encode(value) else { return }
    let temporary = path + ".tmp"
    if FileManager.default.createFile(atPath: temporary, contents: data) {
      _ = rename(temporary, path)
    }
  }

  /// A status file written by `write`, or nil when there is none or it does not decode.
  public static func read<T: Decodable>(_ type: T.Type, from path: String) -> T? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    return try? JSONDecoder().decode(type, from: data)
  }
}

/// Unix milliseconds: the clock every status file and report is stamped with.
public func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// The control channel as a data-plane process sees it. Written into the status file, so the lab
/// and SREs can tell "connected and current" from "running on the last good config".
public struct ControlLinkStatus: Sendable, Codable, Equatable {
  public var controller: String
  public var connected: Bool = false
  /// Unix ms of the last message from the controller (0 = never).
  public var lastHeardMs: Int64 = 0
  /// Successful stream openings.
  public var connects: Int = 0
  public var lastError: String?
  public var appliedVersion: UInt64 = 0
  /// Epoch of the applied config (control.proto rule 1).
  public var appliedEpoch: UInt64 = 0
  /// Unix ms of the last message received from the controller on a stream (0 = never): what
  /// lease-mode fencing measures silence from (`lastHeardMs` also moves when a connection is
  /// attempted).
  public var lastMessageMs: Int64 = 0
  /// Lease-mode fencing: "" (not fencing), "no-new-mappings" or "fenced".
  public var fencing: String = ""
  /// Unix ms when the applied config was applied (also after loading it from disk at start).
  public var appliedAtMs: Int64 = 0
  public var acks: Int = 0
  public var nacks: Int = 0
  public var lastNack: String?

  public init(controller: String) { self.controller = controller }
}

/// What an agent writes to `status.json` in its state dir every second.
public struct AgentStatus: Codable, Sendable {
  public var hostID: String
  public var pid: Int32
  public var bootID: String
  public var underlay: String
  public var flowTableAttached: Bool
  public var control: ControlLinkStatus
  public var dataplane: AgentDataplaneStats
  /// Where metrics are served ("" when not).
  public var metrics: String
  /// NAT log entries written and skipped by the rate limit.
  public var logWritten: UInt64
  public var logSkipped: UInt64
  /// Dynamic port allocation: requests sent, blocks granted, last refusal.
  public var portRequests: Int
  public var portGrants: Int
  public var lastPortRefusal: String?
  /// Per VM: NAT ports allocated and in use, and its active NAT IPs.
  public var ports: [String: VMPorts]?
  public var writtenMs: Int64

  public init(
    hostID: String, pid: Int32, bootID: String, underlay: String, flowTableAttached: Bool, control: ControlLinkStatus,
    dataplane: AgentDataplaneStats, metrics: String, logWritten: UInt64, logSkipped: UInt64, portRequests: Int,
    portGrants: Int, lastPortRefusal: String?, ports: [String: VMPorts]?, writtenMs: Int64
  ) {
    self.hostID = hostID
    self.pid = pid
    self.bootID = bootID
    self.underlay = underlay
    self.flowTableAttached = flowTableAttached
    self.control = control
    self.dataplane = dataplane
    self.metrics = metrics
    self.logWritten = logWritten
    self.logSkipped = logSkipped
    self.portRequests = portRequests
    self.portGrants = portGrants
    self.lastPortRefusal = lastPortRefusal
    self.ports = ports
    self.writtenMs = writtenMs
  }
}

/// A VM's NAT ports as its host sees them.
public struct VMPorts: Codable, Sendable, Equatable {
  public var allocated: Int
  public var inUse: Int
  public var natIPs: [String]
  /// Open flows by the NAT IP they use (drained IPs included).
  public var flowsByNatIP: [String: Int]

  public init(allocated: Int, inUse: Int, natIPs: [String], flowsByNatIP: [String: Int]) {
    self.allocated = allocated
    self.inUse = inUse
    self.natIPs = natIPs
    self.flowsByNatIP = flowsByNatIP
  }
}

/// What the edge writes to `status.json` in its state dir every second.
public struct EdgeStatus: Codable, Sendable {
  public var pid: Int32
  public var underlay: String
  public var control: ControlLinkStatus
  public var routes: Int
  public var dataplane: EdgeDataplaneStats
  public var servers: InternetCounters
  public var writtenMs: Int64

  public init(
    pid: Int32, underlay: String, control: ControlLinkStatus, routes: Int, dataplane: EdgeDataplaneStats,
    servers: InternetCounters, writtenMs: Int64
  ) {
    self.pid = pid
    self.underlay = underlay
    self.control = control
    self.routes = routes
    self.dataplane = dataplane
    self.servers = servers
    self.writtenMs = writtenMs
  }
}
