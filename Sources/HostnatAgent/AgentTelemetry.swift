import Foundation
import HostnatDataplane
import HostnatEngine
import HostnatPackets
import HostnatProto
import HostnatTelemetry
import Synchronization

/// An agent's NAT log and metrics: both fed from the data plane once a second, off the packet path.
final class AgentTelemetry: Sendable {
  let registry = TelemetryRegistry()
  /// Per VM: ports allocated and in use, as computed at the last tick (for the status file).
  let ports = Mutex<[String: VMPorts]>([:])
  let log: NatLogWriter
  let server: MetricsHTTPServer

  init(stateDir: String, hostID: String) throws {
    log = try NatLogWriter(path: stateDir + "/nat.log", host: hostID)
    server = MetricsHTTPServer(registry: registry)
  }

  /// Gateway and VPC names for each VM's log entries, from the snapshot in force.
  func setContext(_ config: Hostnat_V1_HostConfig) {
    var gateways: [String: Hostnat_V1_GatewayConfig] = [:]
    for gateway in config.gateways { gateways[gateway.key] = gateway }
    var contexts: [String: VMLogContext] = [:]
    for vm in config.vms {
      for nic in vm.nics {
        let id = vm.nics.count > 1 ? "\(vm.instance)/\(nic.name)" : vm.instance
        let gateway = nic.natBindings.first.flatMap { gateways[$0.gateway] }
        contexts[id] = VMLogContext(
          gateway: gateway?.name ?? "", router: gateway?.router ?? "", region: gateway?.region ?? "",
          network: nic.network, subnet: nic.subnet)
      }
    }
    log.setContext(contexts)
  }

  /// Drains the engine's log records into the NAT log and refreshes every metric.
  func tick(dataplane: AgentDataplane, link: ControlLinkStatus, config: Hostnat_V1_HostConfig?) {
    log.write(dataplane.drainLog(), now: DataplaneClock.now())
    registry.update(log: log)
    let stats = dataplane.stats()
    var gatewayOf: [String: String] = [:]
    var allocated: [String: Int] = [:]
    for vm in config?.vms ?? [] {
      for nic in vm.nics {
        let id = vm.nics.count > 1 ? "\(vm.instance)/\(nic.name)" : vm.instance
        gatewayOf[id] = nic.natBindings.first?.gateway ?? ""
        allocated[id] = nic.natBindings.reduce(0) { $0 + $1.portBlocks.filter { !$0.drained }.reduce(0) { $0 + Int($1.count) } }
      }
    }
    registry.update(agent: stats, gateways: gatewayOf)
    // Ports in use and port usage (most connections to one destination), as Cloud NAT defines them.
    var ports: [String: Set<UInt32>] = [:]
    var open: [String: Int] = [:]
    var perDestination: [String: [UInt64: Int]] = [:]
    var byIP: [String: [String: Int]] = [:]
    for flow in dataplane.flows() {
      guard let vm = flow.vmID else { continue }
      byIP[vm, default: [:]]["\(flow.natIP)", default: 0] += 1
      ports[vm, default: []].insert(flow.natIP.value &+ UInt32(flow.natPort) << 16 ^ UInt32(flow.natPort))
      open[vm, default: 0] += 1
      let key = UInt64(flow.remoteIP.value) << 24 | UInt64(flow.remotePort) << 8 | UInt64(flow.protocolNumber)
      perDestination[vm, default: [:]][key, default: 0] += 1
    }
    for (vm, gateway) in gatewayOf {
      let labels = [("vm", vm), ("gateway", gateway)]
      registry.gauge("hostnat_agent_allocated_ports", labels: labels).set(allocated[vm] ?? 0)
      registry.gauge("hostnat_agent_ports_in_use", labels: labels).set(ports[vm]?.count ?? 0)
      registry.gauge("hostnat_agent_open_connections", labels: labels).set(open[vm] ?? 0)
      registry.gauge("hostnat_agent_port_usage", labels: labels).set(perDestination[vm]?.values.max() ?? 0)
    }
    var view: [String: VMPorts] = [:]
    for vm in gatewayOf.keys {
      let ips = Set(config?.vms.flatMap { v in v.nics.flatMap { n in (v.nics.count > 1 ? "\(v.instance)/\(n.name)" : v.instance) == vm ? n.natBindings.flatMap { $0.portBlocks.filter { !$0.drained }.map(\.natIp) } : [] } } ?? [])
      view[vm] = VMPorts(allocated: allocated[vm] ?? 0, inUse: ports[vm]?.count ?? 0, natIPs: ips.sorted(), flowsByNatIP: byIP[vm] ?? [:])
    }
    self.ports.withLock { $0 = view }
    registry.gauge("hostnat_agent_controller_connected").set(link.connected)
    let since = link.appliedAtMs > 0 ? Double(nowMs() - link.appliedAtMs) / 1000 : -1
    registry.gauge("hostnat_agent_seconds_since_last_config").set(since)
  }
}

/// A VM's NAT ports as its host sees them.
public struct VMPorts: Codable, Sendable, Equatable {
  public var allocated: Int
  public var inUse: Int
  public var natIPs: [String]
  /// Open flows by the NAT IP they use (drained IPs included).
  public var flowsByNatIP: [String: Int]
}
