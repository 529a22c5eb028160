import Foundation
public import HostnatContracts
public import HostnatProto

/// One process of a lab, as recorded in `lab.json`.
public struct LabProcess: Codable, Sendable {
  /// `controller`, `edge`, `agent/HOST` or `vm/NAME`: the component names the chaos commands take.
  public var name: String
  public var pid: Int32
  public var arguments: [String]
  public var log: String
  /// Where the process keeps its state and `status.json` (the VM's report file for VMs).
  public var stateDir: String
  /// Its listening address (gRPC for the controller, underlay UDP for the others).
  public var address: String
  /// Where it serves Prometheus metrics (controller, edge, agents).
  public var metrics: String?
}

/// What `lab up` leaves in the lab directory so later commands can find the cluster.
public struct LabState: Codable, Sendable {
  public var dir: String
  public var topology: String
  public var executable: String
  public var controller: String
  public var edge: String
  public var startedMs: Int64
  public var processes: [LabProcess]

  public static func path(_ dir: String) -> String { dir + "/lab.json" }

  public static func load(_ dir: String) throws -> LabState {
    guard let data = FileManager.default.contents(atPath: path(dir)) else {
      throw LabError("no lab in \(dir) (run `hostnat lab up` first)")
    }
    do {
      return try JSONDecoder().decode(LabState.self, from: data)
    } catch {
      throw LabError("\(path(dir)): unreadable: \(error)")
    }
  }

  public func save() throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(self).write(to: URL(fileURLWithPath: Self.path(dir)), options: .atomic)
  }

  public func process(_ name: String) -> LabProcess? { processes.first { $0.name == name } }

  public mutating func replace(_ process: LabProcess) {
    if let i = processes.firstIndex(where: { $0.name == process.name }) { processes[i] = process } else { processes.append(process) }
  }
}

extension LabState {
  /// What an agent last wrote to its status file (nil: no such host, or nothing written yet).
  public func agentStatus(_ host: String) -> AgentStatus? {
    process("agent/\(host)").flatMap { Lab.readJSON($0.stateDir + "/status.json") }
  }

  /// The config a host holds: its last applied snapshot, from its state dir.
  public func heldConfig(_ host: String) -> Hostnat_V1_HostConfig? {
    process("agent/\(host)").flatMap { try? StateFile<Hostnat_V1_HostConfig>(path: $0.stateDir + "/config.pb").load() }
  }

  /// Hosts with an agent in this lab, in lab order.
  public var agentHosts: [String] { processes.filter { $0.name.hasPrefix("agent/") }.map { String($0.name.dropFirst("agent/".count)) } }
}

/// A NAT IP:port block an agent holds now, and whose it is.
struct HeldPortBlock {
  var ip: String
  var ports: Range<UInt32>
  var host: String
  var vm: String
}

extension LabState {
  /// Every NAT IP:port block (active and drained) in the configs the agents of `hosts` hold.
  func heldPortBlocks(hosts: [String]) -> [HeldPortBlock] {
    var blocks: [HeldPortBlock] = []
    for host in hosts {
      for vm in heldConfig(host)?.vms ?? [] {
        for block in vm.nics.flatMap({ $0.natBindings.flatMap(\.portBlocks) }) {
          blocks.append(HeldPortBlock(ip: block.natIp, ports: block.firstPort..<(block.firstPort + block.count), host: host, vm: vm.instance))
        }
      }
    }
    return blocks
  }

  /// Pairs of blocks that overlap on one NAT IP while `owner` tells them apart: the invariant
  /// "no NAT IP:port is owned twice", per host or per VM.
  static func clashes(_ blocks: [HeldPortBlock], owner: (HeldPortBlock) -> String) -> [String] {
    var clashes: [String] = []
    for i in blocks.indices {
      for j in blocks.indices where j > i {
        let a = blocks[i], b = blocks[j]
        if a.ip == b.ip, owner(a) != owner(b), a.ports.overlaps(b.ports) {
          clashes.append("\(a.ip):\(a.ports) held by \(owner(a)) and \(owner(b))")
        }
      }
    }
    return clashes
  }
}
