public import HostnatEngine
import HostnatPackets
public import HostnatProto

/// Why a pushed snapshot cannot be applied on this host. The text is the NACK reason the
/// controller records, so it names the element and the problem.
public struct ConfigRejection: Error, Equatable, CustomStringConvertible, Sendable {
  public var reason: String
  public init(_ reason: String) { self.reason = reason }
  public var description: String { reason }
}

/// Turns the controller's view of a host (protobuf) into what the translation engine runs.
/// Everything the engine cannot take is caught here or by `NATEngine.apply`, so a bad snapshot is
/// NACKed whole and the previous one stays in force.
public enum ConfigTranslation {
  /// The engine config for a host snapshot.
  public static func engineConfig(_ host: Hostnat_V1_HostConfig) throws(ConfigRejection) -> EngineConfig {
    var gateways: [String: Hostnat_V1_GatewayConfig] = [:]
    for gateway in host.gateways {
      guard gateways.updateValue(gateway, forKey: gateway.key) == nil else {
        throw ConfigRejection("gateways[\(gateway.key)]: listed twice")
      }
    }
    var vms: [VMConfig] = []
    for vm in host.vms {
      for nic in vm.nics {
        let id = vmID(vm, nic)
        guard let primary = IPv4Address(nic.primaryIp) else {
          throw ConfigRejection("vms[\(id)].primaryIp: \(nic.primaryIp.debugDescription) is not an IPv4 address")
        }
        var external: IPv4Address?
        if !nic.externalIp.isEmpty {
          guard let ip = IPv4Address(nic.externalIp) else {
            throw ConfigRejection("vms[\(id)].externalIp: \(nic.externalIp.debugDescription) is not an IPv4 address")
          }
          external = ip
        }
        // The engine serves one gateway per NIC: a NIC's network has one gateway covering a
        // given subnet range (the planner enforces it), so more than one binding is a bad snapshot.
        guard nic.natBindings.count <= 1 else {
          throw ConfigRejection("vms[\(id)].natBindings: \(nic.natBindings.count) gateways for one NIC; at most 1 is supported")
        }
        var sources: [IPv4CIDR] = []
        var blocks: [PortBlock] = []
        var settings = GatewaySettings(name: "none")
        if let binding = nic.natBindings.first {
          guard let gateway = gateways[binding.gateway] else {
            throw ConfigRejection("vms[\(id)].natBindings.gateway: \(binding.gateway.debugDescription) is not among the snapshot's gateways")
          }
          settings = gatewaySettings(gateway)
          for source in binding.natSources {
            guard let cidr = IPv4CIDR(source.ipCidrRange) else {
              throw ConfigRejection("vms[\(id)].natSources: \(source.ipCidrRange.debugDescription) is not a CIDR range")
            }
            sources.append(cidr)
          }
          var drained: Set<IPv4Address> = []
          for block in binding.portBlocks {
            guard let ip = IPv4Address(block.natIp) else {
              throw ConfigRejection("vms[\(id)].portBlocks.natIp: \(block.natIp.debugDescription) is not an IPv4 address")
            }
            let first = Int(block.firstPort)
            let end = first + Int(block.count)
            guard block.count > 0, first >= 1024, end <= 65536 else {
              throw ConfigRejection("vms[\(id)].portBlocks: \(block.natIp):\(first)+\(block.count) is outside 1024-65535")
            }
            blocks.append(PortBlock(natIP: ip, ports: first..<end))
            if block.drained { drained.insert(ip) }
          }
          settings.drainedNatIPs = drained.sorted()
        }
        vms.append(VMConfig(id: id, primaryIP: primary, natSourceRanges: sources, externalIP: external, portBlocks: blocks, gateway: settings))
      }
    }
    return EngineConfig(vms: vms)
  }

  /// The engine's id for a VM's NIC: the instance name, or "instance/nic" when it has several.
  public static func vmID(_ vm: Hostnat_V1_VmConfig, _ nic: Hostnat_V1_NicConfig) -> String {
    vm.nics.count > 1 ? "\(vm.instance)/\(nic.name)" : vm.instance
  }

  static func gatewaySettings(_ gateway: Hostnat_V1_GatewayConfig) -> GatewaySettings {
    func seconds(_ value: UInt32, _ fallback: Int64) -> Duration { .seconds(value == 0 ? fallback : Int64(value)) }
    let t = gateway.timeouts
    let filter: LogFilter =
      switch gateway.logConfig.filter {
      case .errorsOnly: .errorsOnly
      case .translationsOnly: .translationsOnly
      default: .all
      }
    return GatewaySettings(
      name: gateway.key,
      endpointIndependentMapping: gateway.endpointIndependentMapping,
      timeouts: NATTimeouts(
        udp: seconds(t.udpIdleTimeoutSec, 30), icmp: seconds(t.icmpIdleTimeoutSec, 30),
        tcpEstablished: seconds(t.tcpEstablishedIdleTimeoutSec, 1200),
        tcpTransitory: seconds(t.tcpTransitoryIdleTimeoutSec, 30), tcpTimeWait: seconds(t.tcpTimeWaitTimeoutSec, 120)),
      logging: LoggingConfig(enabled: gateway.logConfig.enable, filter: filter)
    )
  }
}
