import HostnatAddressing
import Foundation
import Synchronization
public import HostnatContracts
public import HostnatProto
import SwiftProtobuf
import HostnatDataplane

/// What a fault scenario works with: the running lab, its controller, and the checks it records.
/// Scenarios hand it to tasks of their own, so what changes during the run is behind a lock.
public final class ScenarioContext: Sendable {
  public let lab: Lab
  public let topology: Topology
  public let admin: LabAdmin
  let checks: LabChecks
  /// VMs whose subnet has NAT: their traffic must flow.
  public let natVMs: Set<String>

  /// What the scenario changes as it runs.
  private struct Progress {
    var state: LabState
    /// Start and end of the fault window (reports read at each), for the new-flow counts.
    var faultStart: [String: VMReportFile]?
    var faultEnd: [String: VMReportFile]?
    var convergeMs: Int64?
    var excluded: Set<String> = []
  }

  private let progress: Mutex<Progress>

  init(lab: Lab, state: LabState, topology: Topology) throws {
    self.lab = lab
    self.topology = topology
    progress = Mutex(Progress(state: state))
    admin = try LabAdmin(controller: state.controller)
    checks = LabChecks(say: lab.say)
    let natSubnets = Set((topology.routers ?? []).flatMap { $0.nats ?? [] }.flatMap { $0.subnets ?? topology.networks.flatMap { $0.subnets.map(\.name) } })
    natVMs = Set(topology.instances.filter { natSubnets.contains($0.subnet) }.map(\.name))
  }

  /// The lab record as the scenario last left it (chaos and restarts change pids).
  public var state: LabState { progress.withLock { $0.state } }

  /// VMs the scenario overloads on purpose: left out of the cluster-wide loss checks.
  public var excluded: Set<String> {
    get { progress.withLock { $0.excluded } }
    set { progress.withLock { $0.excluded = newValue } }
  }

  var faultWindow: (start: [String: VMReportFile]?, end: [String: VMReportFile]?) { progress.withLock { ($0.faultStart, $0.faultEnd) } }
  var convergeMs: Int64? { progress.withLock { $0.convergeMs } }

  public func check(_ name: String, _ passed: Bool, _ detail: String) { checks.add(name, passed, detail) }
  public func say(_ line: String) { lab.say(line) }

  public func reports() -> [String: VMReportFile] { state.vmReports() }

  /// Runs a lab chaos action and keeps the lab record current.
  public func chaos(_ action: ChaosAction, _ component: String, graceful: Bool = false) async throws {
    say("  chaos: " + (try await lab.chaos(action, component, graceful: graceful)))
    let reloaded = try LabState.load(lab.dir)
    progress.withLock { $0.state = reloaded }
  }

  public func markFaultStart() {
    let now = reports()
    progress.withLock { $0.faultStart = now }
  }

  public func markFaultEnd() {
    let now = reports()
    progress.withLock { $0.faultEnd = now }
  }

  /// The fault is over: waits until every host and the edge acknowledged the latest version and
  /// records how long that took.
  public func healAndConverge(timeout: Duration = .seconds(30)) async throws {
    let healed = nowMs()
    do {
      try await lab.waitForConvergence(admin, hosts: topology.hosts, timeout: timeout)
    } catch {
      check("every host converged", false, "\(error)")
      throw error
    }
    let took = nowMs() - healed
    progress.withLock { $0.convergeMs = took }
    check("every host converged", true, "all hosts and the edge acked the latest version \(took) ms after the heal")
  }

  /// A harmless NAT change every host with the gateway must receive: nat-1's UDP idle timeout.
  /// Returns the hosts' new versions.
  @discardableResult
  public func changeUDPTimeout(_ seconds: UInt32) async throws -> [String: UInt64] {
    try await admin.updateNat(region: topology.region, mask: ["timeouts"]) { $0.timeouts.udpIdleTimeoutSec = seconds }
    let hosts = try await admin.hosts()
    return Dictionary(hosts.map { ($0.hostID, $0.latestVersion) }, uniquingKeysWith: { a, _ in a })
  }

  /// Restarts a VM process with different traffic options (e.g. `--tcp-churn-per-sec 400`).
  public func respawnVM(_ name: String, set options: [String: String]) async throws {
    var state = self.state
    guard var process = state.process("vm/\(name)") else { throw LabError("no vm/\(name)") }
    await Processes.stop([process.pid])
    var arguments = process.arguments
    for (flag, value) in options {
      if let i = arguments.firstIndex(of: flag), i + 1 < arguments.count { arguments[i + 1] = value } else { arguments += [flag, value] }
    }
    process.arguments = arguments
    process.pid = try Processes.spawn(state.executable, arguments, log: process.log)
    state.replace(process)
    try state.save()
    progress.withLock { [state] in $0.state = state }
    say("  chaos: vm/\(name) restarted with \(options.map { "\($0.key) \($0.value)" }.joined(separator: " "))")
  }

  /// Ports a VM holds, summed over its host's config.
  public func heldPorts(_ vm: String) -> Int {
    for host in topology.hosts {
      if let config = heldConfig(host), let held = config.vms.first(where: { $0.instance == vm }) {
        return held.nics.flatMap { $0.natBindings.flatMap { $0.portBlocks.filter { !$0.drained } } }.reduce(0) { $0 + Int($1.count) }
      }
    }
    return 0
  }

  /// Turns on dynamic port allocation on nat-1 with `max` ports per VM.
  public func enableDynamicPorts(max: UInt32) async throws {
    try await admin.updateNat(region: topology.region, mask: ["enable_dynamic_port_allocation", "max_ports_per_vm"]) {
      $0.enableDynamicPortAllocation = true
      $0.maxPortsPerVm = max
    }
    say("  nat-1: dynamic port allocation on, max \(max) ports per VM")
  }

  /// Sets nat-1's active and drained reserved addresses (by name).
  public func setNatIPs(active: [String], drained: [String]) async throws {
    try await admin.updateNat(region: topology.region, mask: ["nat_ips", "drain_nat_ips"]) {
      $0.natIps = active
      $0.drainNatIps = drained
    }
    say("  nat-1: active \(active.joined(separator: ",")), drained \(drained.isEmpty ? "none" : drained.joined(separator: ","))")
  }

  /// Open flows per NAT IP across the NATed VMs, from the agents' status files.
  public func flowsByNatIP() -> [String: Int] {
    var total: [String: Int] = [:]
    for host in topology.hosts {
      for (vm, ports) in agentStatus(host)?.ports ?? [:] where natVMs.contains(vm) {
        for (ip, n) in ports.flowsByNatIP { total[ip, default: 0] += n }
      }
    }
    return total
  }

  /// The applied config of one agent, from its state dir (what the host actually holds).
  public func heldConfig(_ host: String) -> Hostnat_V1_HostConfig? { state.heldConfig(host) }

  public func agentStatus(_ host: String) -> AgentStatus? { state.agentStatus(host) }

  /// Each NATed VM's port blocks as its host holds them ("IP:first+count", sorted).
  public func heldBlocks() -> [String: [String]] {
    var result: [String: [String]] = [:]
    for host in topology.hosts {
      for vm in heldConfig(host)?.vms ?? [] {
        result[vm.instance] = vm.nics.flatMap { $0.natBindings.flatMap { $0.portBlocks.map { "\($0.natIp):\($0.firstPort)+\($0.count)" } } }.sorted()
      }
    }
    return result
  }

  /// The cluster-wide invariant: no NAT IP:port is in blocks held by two hosts at once.
  func checkNoBlockOwnedTwice() {
    let blocks = state.heldPortBlocks(hosts: topology.hosts)
    let clashes = LabState.clashes(blocks, owner: \.host)
    check("no NAT IP:port owned by two hosts", clashes.isEmpty,
      clashes.isEmpty ? "\(blocks.count) blocks held across \(topology.hosts.count) hosts, none shared" : clashes.joined(separator: "; "))
  }
}
