import ArgumentParser
import HostnatProto
import SwiftProtobuf

// The network around NAT, spelled as gcloud spells it: firewall-rules, routes, projects,
// networks peerings, routers nats rules (serverless egress is in Serverless.swift).

/// `hostnat firewall-rules ...`
struct FirewallRulesCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "firewall-rules", abstract: "VPC firewall rules, enforced by the hosts (egress before NAT, ingress after).",
    subcommands: [Create.self, Describe.self, List.self, Delete.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a firewall rule.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Rule name.") var name: String
    @Option(help: "Network the rule applies to.") var network: String
    @Option(help: "INGRESS or EGRESS (default INGRESS).") var direction: String = "INGRESS"
    @Option(help: "allow or deny.") var action: String
    @Option(help: "What it matches: tcp:80,tcp:8000-8080,udp,icmp,all.") var rules: [String]
    @Option(help: "INGRESS: source CIDRs, A,B,... (default 0.0.0.0/0).") var sourceRanges: [String] = []
    @Option(help: "EGRESS: destination CIDRs, A,B,... (default 0.0.0.0/0).") var destinationRanges: [String] = []
    @Option(help: "0-65535, lower wins (default 1000).") var priority: UInt32 = 1000
    @Option(help: "Only instances with one of these network tags, A,B,... (default: every instance).") var targetTags: [String] = []
    @Flag(help: "Log packets the rule matches.") var enableLogging = false
    @Option(help: "Free text.") var description: String?

    func run() async throws {
      let session = AdminSession(command: "firewall-rules.create", global: global)
      let rule = try session.check { () throws(CommandError) -> Hostnat_V1_FirewallRule in
        var rule = Hostnat_V1_FirewallRule()
        rule.name = name
        rule.network = network
        switch direction.uppercased() {
        case "INGRESS": rule.direction = .ingress
        case "EGRESS": rule.direction = .egress
        default: throw CommandError(flag: "--direction", reason: "\"\(direction)\" is not INGRESS or EGRESS")
        }
        switch action.lowercased() {
        case "allow": rule.allow = true
        case "deny": rule.allow = false
        default: throw CommandError(flag: "--action", reason: "\"\(action)\" is not allow or deny")
        }
        rule.priority = priority
        // gcloud groups ports by protocol: tcp:80,tcp:443 is one tcp entry with two ports.
        var order: [String] = []
        var ports: [String: [String]] = [:]
        for item in Parse.commaList(rules) {
          let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
          let proto = parts[0].lowercased()
          if ports[proto] == nil {
            order.append(proto)
            ports[proto] = []
          }
          if parts.count == 2 { ports[proto]?.append(parts[1]) }
        }
        if order.isEmpty { throw CommandError(flag: "--rules", reason: "give at least one protocol, e.g. tcp:80 or all") }
        rule.rules = order.map { proto in .with { $0.ipProtocol = proto; $0.ports = ports[proto] ?? [] } }
        rule.sourceRanges = try Parse.commaList(sourceRanges).map { r throws(CommandError) in try Parse.cidr(r, flag: "--source-ranges") }
        rule.destinationRanges = try Parse.commaList(destinationRanges).map { r throws(CommandError) in try Parse.cidr(r, flag: "--destination-ranges") }
        rule.targetTags = Parse.commaList(targetTags)
        rule.enableLogging = enableLogging
        rule.description_p = description ?? ""
        return rule
      }
      try await session.run { admin in
        let created = try await admin.createFirewallRule(.with { $0.rule = rule }, options: AdminSession.callOptions)
        Console.err("Created [firewalls/\(created.name)].\n")
        Render.firewallRules([created], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a firewall rule.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    func run() async throws {
      try await AdminSession(command: "firewall-rules.describe", global: global).run { admin in
        let rule = try await admin.getFirewallRule(.with { $0.name = name }, options: AdminSession.callOptions)
        Render.firewallRules([rule], format: global.format ?? .yaml, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List firewall rules.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Only this network's rules.") var network: String?
    func run() async throws {
      try await AdminSession(command: "firewall-rules.list", global: global).run { admin in
        let response = try await admin.listFirewallRules(.with { $0.network = network ?? "" }, options: AdminSession.callOptions)
        Render.firewallRules(response.rules, format: global.format ?? .table, single: false)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a firewall rule.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    func run() async throws {
      try await AdminSession(command: "firewall-rules.delete", global: global).run { admin in
        let response = try await admin.deleteFirewallRule(.with { $0.name = name }, options: AdminSession.callOptions)
        Render.deleted("firewalls/\(name)", response, format: global.format)
      }
    }
  }
}

/// `hostnat routes ...`
struct RoutesCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "routes", abstract: "Custom routes: a next hop other than the default Internet gateway bypasses Cloud NAT.",
    subcommands: [Create.self, Describe.self, List.self, Delete.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a route.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Route name.") var name: String
    @Option(help: "Network.") var network: String
    @Option(help: "Destination CIDR.") var destinationRange: String
    @Option(help: "Next hop: a VM (e.g. a NAT instance); its traffic bypasses Cloud NAT.") var nextHopInstance: String?
    @Option(help: "Next hop: default-internet-gateway (Cloud NAT applies).") var nextHopGateway: String?
    @Option(help: "Next hop: a VPN tunnel (modelled by name only); bypasses Cloud NAT.") var nextHopVpnTunnel: String?
    @Option(help: "Lower wins among equally specific routes (default 1000).") var priority: UInt32 = 1000
    @Option(help: "Free text.") var description: String?

    func run() async throws {
      let session = AdminSession(command: "routes.create", global: global)
      let route = try session.check { () throws(CommandError) -> Hostnat_V1_Route in
        var route = Hostnat_V1_Route()
        route.name = name
        route.network = network
        route.destRange = try Parse.cidr(destinationRange, flag: "--destination-range")
        route.priority = priority
        route.description_p = description ?? ""
        let hops = [nextHopInstance, nextHopGateway, nextHopVpnTunnel].compactMap { $0 }
        guard hops.count == 1 else {
          throw CommandError(flag: "--next-hop-instance", reason: "exactly one of --next-hop-instance, --next-hop-gateway or --next-hop-vpn-tunnel is required")
        }
        if let instance = nextHopInstance { route.nextHop.instance = instance }
        if let gateway = nextHopGateway {
          guard gateway == "default-internet-gateway" else {
            throw CommandError(flag: "--next-hop-gateway", reason: "the only gateway is default-internet-gateway")
          }
          route.nextHop.defaultInternetGateway = true
        }
        if let tunnel = nextHopVpnTunnel { route.nextHop.vpnTunnel = tunnel }
        return route
      }
      try await session.run { admin in
        let created = try await admin.createRoute(.with { $0.route = route }, options: AdminSession.callOptions)
        Console.err("Created [routes/\(created.name)].\n")
        Render.routes([created], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a route.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    func run() async throws {
      try await AdminSession(command: "routes.describe", global: global).run { admin in
        let route = try await admin.getRoute(.with { $0.name = name }, options: AdminSession.callOptions)
        Render.routes([route], format: global.format ?? .yaml, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List routes.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Only this network's routes.") var network: String?
    func run() async throws {
      try await AdminSession(command: "routes.list", global: global).run { admin in
        let response = try await admin.listRoutes(.with { $0.network = network ?? "" }, options: AdminSession.callOptions)
        Render.routes(response.routes, format: global.format ?? .table, single: false)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a route.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    func run() async throws {
      try await AdminSession(command: "routes.delete", global: global).run { admin in
        let response = try await admin.deleteRoute(.with { $0.name = name }, options: AdminSession.callOptions)
        Render.deleted("routes/\(name)", response, format: global.format)
      }
    }
  }
}

/// `hostnat projects ...`
struct ProjectsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "projects", abstract: "Projects, and Shared VPC host and service projects.",
    subcommands: [Create.self, List.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a project.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Project id.") var id: String
    @Flag(help: "Make it a Shared VPC host project.") var sharedVpcHost = false
    @Option(help: "Attach it as a service project of this Shared VPC host project.") var sharedVpcHostProject: String?
    func run() async throws {
      try await AdminSession(command: "projects.create", global: global).run { admin in
        let project = try await admin.createProject(
          .with {
            $0.project.id = id
            $0.project.sharedVpcHost = sharedVpcHost
            $0.project.sharedVpcHostProject = sharedVpcHostProject ?? ""
          }, options: AdminSession.callOptions)
        Console.err("Created [projects/\(project.id)].\n")
        Render.projects([project], format: global.format ?? .table, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List projects.")
    @OptionGroup var global: GlobalOptions
    func run() async throws {
      try await AdminSession(command: "projects.list", global: global).run { admin in
        let response = try await admin.listProjects(.init(), options: AdminSession.callOptions)
        Render.projects(response.projects, format: global.format ?? .table, single: false)
      }
    }
  }
}

/// `hostnat networks peerings ...` and `hostnat networks update`.
struct PeeringsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "peerings", abstract: "VPC Network Peering (exchanges subnet routes, never NAT).",
    subcommands: [Create.self, Delete.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Peer a network with another.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Peering name (informational).") var name: String
    @Option(help: "The network.") var network: String
    @Option(help: "The network to peer with.") var peerNetwork: String
    func run() async throws {
      try await AdminSession(command: "networks.peerings.create", global: global).run { admin in
        var net = try await admin.getNetwork(.with { $0.name = network }, options: AdminSession.callOptions)
        if !net.peerNetworks.contains(peerNetwork) { net.peerNetworks.append(peerNetwork) }
        let updated = try await admin.updateNetwork(.with { $0.network = net; $0.updateMask = ["peer_networks"] }, options: AdminSession.callOptions)
        Console.err("Created [networks/\(network)/peerings/\(name)].\n")
        Render.networks([updated], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a peering.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "The network.") var network: String
    @Option(help: "The peer network.") var peerNetwork: String
    func run() async throws {
      try await AdminSession(command: "networks.peerings.delete", global: global).run { admin in
        var net = try await admin.getNetwork(.with { $0.name = network }, options: AdminSession.callOptions)
        net.peerNetworks.removeAll { $0 == peerNetwork }
        let updated = try await admin.updateNetwork(.with { $0.network = net; $0.updateMask = ["peer_networks"] }, options: AdminSession.callOptions)
        Render.networks([updated], format: global.format ?? .table, single: true)
      }
    }
  }
}

/// `hostnat routers nats rules ...`
struct NATRulesCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rules", abstract: "NAT rules: destinations matching a rule use its NAT IPs.",
    subcommands: [Create.self, Update.self, List.self, Delete.self])

  /// Reads the gateway, changes its rules with `edit`, writes them back.
  static func edit(
    _ session: AdminSession, region: String, router: String, nat: String, format: OutputFormat?,
    _ edit: @escaping @Sendable (inout [Hostnat_V1_NatRule]) throws -> Void
  ) async throws {
    try await session.run { admin in
      var gateway = try await admin.getNat(.with { $0.region = region; $0.router = router; $0.name = nat }, options: AdminSession.callOptions)
      try edit(&gateway.rules)
      let updated = try await admin.updateNat(
        .with {
          $0.region = region
          $0.router = router
          $0.nat = gateway
          $0.updateMask = ["rules"]
        }, options: AdminSession.callOptions)
      Render.natRules(updated.rules, format: format ?? .table)
    }
  }

  struct RuleFlags: ParsableArguments {
    @Option(help: "The NAT gateway.") var nat: String
    @Option(help: "The router.") var router: String
    @Option(help: "Region of the router.") var region: String
  }

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Add a NAT rule.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Rule number (lower matches first).") var ruleNumber: UInt32
    @OptionGroup var where_: RuleFlags
    @Option(help: "CEL match, e.g. 'inIpRange(destination.ip, \"203.0.113.0/28\")'.") var match: String
    @Option(help: "Reserved addresses for matching traffic, A,B,...") var sourceNatActiveIps: [String] = []
    @Option(help: "Drained reserved addresses of the rule, A,B,...") var sourceNatDrainIps: [String] = []
    @Option(help: "Free text.") var description: String?
    func run() async throws {
      let rule = Hostnat_V1_NatRule.with {
        $0.ruleNumber = ruleNumber
        $0.match = match
        $0.sourceNatActiveIps = Parse.commaList(sourceNatActiveIps)
        $0.sourceNatDrainIps = Parse.commaList(sourceNatDrainIps)
        $0.description_p = description ?? ""
      }
      let number = ruleNumber
      let session = AdminSession(command: "routers.nats.rules.create", global: global)
      try await NATRulesCommand.edit(session, region: where_.region, router: where_.router, nat: where_.nat, format: global.format) { rules in
        if rules.contains(where: { $0.ruleNumber == number }) {
          throw CommandError(flag: "RULE_NUMBER", reason: "rule \(number) already exists")
        }
        rules.append(rule)
      }
    }
  }

  struct Update: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Change a NAT rule's match or IPs (drain by moving IPs to --source-nat-drain-ips).")
    @OptionGroup var global: GlobalOptions
    @Argument var ruleNumber: UInt32
    @OptionGroup var where_: RuleFlags
    @Option var match: String?
    @Option var sourceNatActiveIps: [String] = []
    @Option var sourceNatDrainIps: [String] = []
    @Flag(help: "Remove every drained IP of the rule.") var clearSourceNatDrainIps = false
    func run() async throws {
      let number = ruleNumber
      let match = match
      let active = Parse.commaList(sourceNatActiveIps)
      let drain = Parse.commaList(sourceNatDrainIps)
      let clear = clearSourceNatDrainIps
      let session = AdminSession(command: "routers.nats.rules.update", global: global)
      try await NATRulesCommand.edit(session, region: where_.region, router: where_.router, nat: where_.nat, format: global.format) { rules in
        guard let i = rules.firstIndex(where: { $0.ruleNumber == number }) else {
          throw CommandError(flag: "RULE_NUMBER", reason: "rule \(number) not found")
        }
        if let match { rules[i].match = match }
        if !active.isEmpty { rules[i].sourceNatActiveIps = active }
        if !drain.isEmpty { rules[i].sourceNatDrainIps = drain }
        if clear { rules[i].sourceNatDrainIps = [] }
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a gateway's NAT rules.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var where_: RuleFlags
    func run() async throws {
      try await AdminSession(command: "routers.nats.rules.list", global: global).run { admin in
        let gateway = try await admin.getNat(.with { $0.region = where_.region; $0.router = where_.router; $0.name = where_.nat }, options: AdminSession.callOptions)
        Render.natRules(gateway.rules, format: global.format ?? .table)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a NAT rule.")
    @OptionGroup var global: GlobalOptions
    @Argument var ruleNumber: UInt32
    @OptionGroup var where_: RuleFlags
    func run() async throws {
      let number = ruleNumber
      let session = AdminSession(command: "routers.nats.rules.delete", global: global)
      try await NATRulesCommand.edit(session, region: where_.region, router: where_.router, nat: where_.nat, format: global.format) { rules in
        guard rules.contains(where: { $0.ruleNumber == number }) else { throw CommandError(flag: "RULE_NUMBER", reason: "rule \(number) not found") }
        rules.removeAll { $0.ruleNumber == number }
      }
    }
  }
}

extension Render {
  static func firewallRules(_ items: [Hostnat_V1_FirewallRule], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["NAME", "NETWORK", "DIRECTION", "PRIORITY", "ALLOW", "DENY", "RANGES", "TARGET_TAGS"])
      for r in items {
        let what = list(r.rules.map { m in m.ports.isEmpty ? m.ipProtocol : m.ports.map { p in "\(m.ipProtocol):\(p)" }.joined(separator: ",") })
        table.add([
          r.name, r.network, r.direction == .egress ? "EGRESS" : "INGRESS", "\(r.priority)", r.allow ? what : "", r.allow ? "" : what,
          list(r.direction == .egress ? r.destinationRanges : r.sourceRanges), list(r.targetTags),
        ])
      }
      return table
    }
  }

  static func routes(_ items: [Hostnat_V1_Route], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["NAME", "NETWORK", "DEST_RANGE", "NEXT_HOP", "PRIORITY"])
      for r in items {
        let hop: String =
          switch r.nextHop.hop {
          case .defaultInternetGateway: "default-internet-gateway"
          case .instance(let name): "instance:\(name)"
          case .vpnTunnel(let name): "vpn:\(name)"
          case nil: ""
          }
        table.add([r.name, r.network, r.destRange, hop, "\(r.priority)"])
      }
      return table
    }
  }

  static func projects(_ items: [Hostnat_V1_Project], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["PROJECT_ID", "SHARED_VPC_HOST", "HOST_PROJECT"])
      for p in items { table.add([p.id, p.sharedVpcHost ? "yes" : "", p.sharedVpcHostProject]) }
      return table
    }
  }

  static func natRules(_ items: [Hostnat_V1_NatRule], format: OutputFormat) {
    many(items, format: format, single: false) {
      var table = Table(["RULE_NUMBER", "MATCH", "ACTIVE_IPS", "DRAIN_IPS"])
      for r in items { table.add(["\(r.ruleNumber)", r.match, list(r.sourceNatActiveIps), list(r.sourceNatDrainIps)]) }
      return table
    }
  }

  static func connectors(_ items: [Hostnat_V1_ServerlessConnector], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["NAME", "REGION", "NETWORK", "IP_CIDR_RANGE", "STATE", "INSTANCES", "MIN", "MAX", "LOAD"])
      for c in items {
        table.add([c.name, c.region, c.network, c.ipCidrRange, c.state, list(c.instances), "\(c.minInstances)", "\(c.maxInstances)", "\(c.load)"])
      }
      return table
    }
  }

  static func services(_ items: [Hostnat_V1_ServerlessService], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["SERVICE", "REGION", "INSTANCES", "VPC", "VPC_EGRESS", "PLATFORM_EGRESS_IP"])
      for s in items {
        let vpc = s.vpcConnector.isEmpty ? (s.subnet.isEmpty ? "" : "direct:\(s.network)/\(s.subnet)") : "connector:\(s.vpcConnector)"
        table.add([s.name, s.region, "\(s.instances)", vpc, s.vpcEgress == .allTraffic ? "all-traffic" : "private-ranges-only", s.serverlessEgressIp])
      }
      return table
    }
  }
}
