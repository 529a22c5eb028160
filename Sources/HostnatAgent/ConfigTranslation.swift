import HostnatAddressing
public import HostnatContracts
public import HostnatEngine
import HostnatDataplane
import HostnatPackets
public import HostnatProto

/// Turns the controller's view of a host (protobuf) into what the translation engine runs.
/// Everything the engine cannot take is caught here or by `NATEngine.apply`, so a bad snapshot is
/// NACKed whole and the previous one stays in force.
public enum ConfigTranslation {
  /// The engine config for a host snapshot.
  public static func engineConfig(_ host: Hostnat_V1_HostConfig) throws(ConfigRejection) -> EngineConfig {
    // Each gateway's settings (rules included) once, however many NICs it serves.
    var gateways: [String: GatewaySettings] = [:]
    for gateway in host.gateways {
      guard gateways.updateValue(try gatewaySettings(gateway), forKey: gateway.key) == nil else {
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
          guard let gatewaySettings = gateways[binding.gateway] else {
            throw ConfigRejection("vms[\(id)].natBindings.gateway: \(binding.gateway.debugDescription) is not among the snapshot's gateways")
          }
          settings = gatewaySettings
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
            blocks.append(PortBlock(natIP: ip, ports: first..<end, ruleNumber: Int(block.ruleNumber)))
            if block.drained { drained.insert(ip) }
          }
          settings.drainedNatIPs = drained.sorted()
        }
        vms.append(VMConfig(
          id: id, primaryIP: primary, natSourceRanges: sources, externalIP: external, portBlocks: blocks, gateway: settings,
          network: nic.network, privateGoogleAccess: nic.privateGoogleAccess, tags: vm.tags))
      }
    }
    return EngineConfig(vms: vms, networks: try networkPolicies(host, networks: Set(vms.map(\.network))))
  }

  /// The policy of every network the host's VMs are in (also empty ones: the implied firewall
  /// rules then apply). Rules and routes are checked here so a bad one NACKs the snapshot.
  static func networkPolicies(_ host: Hostnat_V1_HostConfig, networks: Set<String>) throws(ConfigRejection) -> [String: NetworkPolicy] {
    var policies: [String: NetworkPolicy] = [:]
    for network in networks where !network.isEmpty { policies[network] = NetworkPolicy() }
    func cidrs(_ texts: [String], _ field: String) throws(ConfigRejection) -> [IPv4CIDR] {
      var out: [IPv4CIDR] = []
      for text in texts {
        guard let cidr = IPv4CIDR(text) else { throw ConfigRejection("\(field): \(text.debugDescription) is not a CIDR range") }
        out.append(cidr)
      }
      return out
    }
    for rule in host.firewallRules where policies[rule.network] != nil {
      let field = "firewallRules[\(rule.name)]"
      var matches: [FirewallMatch] = []
      for match in rule.rules {
        guard let proto = FirewallSpec.protocolNumber(match.ipProtocol) else {
          throw ConfigRejection("\(field).ipProtocol: \(match.ipProtocol.debugDescription) is not a protocol")
        }
        var ports: [ClosedRange<UInt16>] = []
        for text in match.ports {
          guard let range = FirewallSpec.portRange(text) else { throw ConfigRejection("\(field).ports: \(text.debugDescription) is not a port range") }
          ports.append(range)
        }
        matches.append(FirewallMatch(protocolNumber: proto, ports: ports))
      }
      let egress = rule.direction == .egress
      policies[rule.network]?.firewallRules.append(FirewallRule(
        name: rule.name, direction: egress ? .egress : .ingress, priority: Int(rule.priority), allow: rule.allow, matches: matches,
        ranges: try cidrs(egress ? rule.destinationRanges : rule.sourceRanges, field), logging: rule.enableLogging,
        targetTags: rule.targetTags))
    }
    for route in host.routes where policies[route.network] != nil {
      let field = "routes[\(route.name)]"
      guard let destination = IPv4CIDR(route.destRange) else { throw ConfigRejection("\(field).destRange: \(route.destRange.debugDescription) is not a CIDR range") }
      let hop: RouteNextHop
      switch route.nextHop.hop {
      case .defaultInternetGateway: hop = .internetGateway
      case .instance(let name): hop = .instance(name)
      case .vpnTunnel(let name): hop = .vpnTunnel(name)
      case nil: throw ConfigRejection("\(field).nextHop: missing")
      }
      policies[route.network]?.routes.append(CustomRoute(name: route.name, destination: destination, priority: Int(route.priority), nextHop: hop))
    }
    for (network, range) in host.googleApisRanges where policies[network] != nil {
      policies[network]?.googleAPIsRanges = try cidrs([range], "googleApisRanges[\(network)]")
    }
    var fabricIDs: [UInt32: String] = [:]
    for vpc in host.vpcNetworks {
      let field = "vpcNetworks[\(vpc.network)]"
      guard (1...Underlay.maxFabricID).contains(vpc.id) else { throw ConfigRejection("\(field).id: \(vpc.id) is not in 1...\(Underlay.maxFabricID)") }
      if let other = fabricIDs[vpc.id], other != vpc.network { throw ConfigRejection("\(field).id: \(vpc.id) is also \(other)'s") }
      fabricIDs[vpc.id] = vpc.network
      let ranges = try cidrs(vpc.internalRanges, field + ".internalRanges")
      guard policies[vpc.network] != nil else { continue }
      policies[vpc.network]?.internalRanges = ranges
      policies[vpc.network]?.fabricID = vpc.id
    }
    return policies
  }

  /// The engine's id for a VM's NIC: the instance name, or "instance/nic" when it has several.
  public static func vmID(_ vm: Hostnat_V1_VmConfig, _ nic: Hostnat_V1_NicConfig) -> String {
    vm.nics.count > 1 ? "\(vm.instance)/\(nic.name)" : vm.instance
  }

  static func gatewaySettings(_ gateway: Hostnat_V1_GatewayConfig) throws(ConfigRejection) -> GatewaySettings {
    func seconds(_ value: UInt32, _ fallback: Int64) -> Duration { .seconds(value == 0 ? fallback : Int64(value)) }
    let t = gateway.timeouts
    let filter: LogFilter =
      switch gateway.logConfig.filter {
      case .errorsOnly: .errorsOnly
      case .translationsOnly: .translationsOnly
      default: .all
      }
    var rules: [NATRuleDestinations] = []
    for rule in gateway.rules {
      var destinations: [IPv4CIDR] = []
      for text in rule.destinationRanges {
        guard let cidr = IPv4CIDR(text) else {
          throw ConfigRejection("gateways[\(gateway.key)].rules[\(rule.ruleNumber)].destinationRanges: \(text.debugDescription) is not a CIDR range")
        }
        destinations.append(cidr)
      }
      rules.append(NATRuleDestinations(ruleNumber: Int(rule.ruleNumber), destinations: destinations))
    }
    return GatewaySettings(
      name: gateway.key,
      endpointIndependentMapping: gateway.endpointIndependentMapping,
      timeouts: NATTimeouts(
        udp: seconds(t.udpIdleTimeoutSec, 30), icmp: seconds(t.icmpIdleTimeoutSec, 30),
        tcpEstablished: seconds(t.tcpEstablishedIdleTimeoutSec, 1200),
        tcpTransitory: seconds(t.tcpTransitoryIdleTimeoutSec, 30), tcpTimeWait: seconds(t.tcpTimeWaitTimeoutSec, 120)),
      logging: LoggingConfig(enabled: gateway.logConfig.enable, filter: filter), rules: rules
    )
  }
}
