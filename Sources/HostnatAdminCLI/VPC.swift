import ArgumentParser
import HostnatProto
import SwiftProtobuf

// The network around NAT, spelled as gcloud spells it: firewall-rules, routes, projects,
// networks peerings, routers nats rules, compute networks vpc-access connectors, run deploy.

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
      let rule = try session.check { () throws(FlagError) -> Hostnat_V1_FirewallRule in
        var rule = Hostnat_V1_FirewallRule()
        rule.name = name
        rule.network = network
        switch direction.uppercased() {
        case "INGRESS": rule.direction = .ingress
        case "EGRESS": rule.direction = .egress
        default: throw FlagError(flag: "--direction", reason: "\"\(direction)\" is not INGRESS or EGRESS")
        }
        switch action.lowercased() {
        case "allow": rule.allow = true
        case "deny": rule.allow = false
        default: throw FlagError(flag: "--action", reason: "\"\(action)\" is not allow or deny")
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
        if order.isEmpty { throw FlagError(flag: "--rules", reason: "give at least one protocol, e.g. tcp:80 or all") }
        rule.rules = order.map { proto in .with { $0.ipProtocol = proto; $0.ports = ports[proto] ?? [] } }
        rule.sourceRanges = try Parse.commaList(sourceRanges).map { r throws(FlagError) in try Parse.cidr(r, flag: "--source-ranges") }
        rule.destinationRanges = try Parse.commaList(destinationRanges).map { r throws(FlagError) in try Parse.cidr(r, flag: "--destination-ranges") }
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
      let route = try session.check { () throws(FlagError) -> Hostnat_V1_Route in
        var route = Hostnat_V1_Route()
        route.name = name
        route.network = network
        route.destRange = try Parse.cidr(destinationRange, flag: "--destination-range")
        route.priority = priority
        route.description_p = description ?? ""
        let hops = [nextHopInstance, nextHopGateway, nextHopVpnTunnel].compactMap { $0 }
        guard hops.count == 1 else {
          throw FlagError(flag: "--next-hop-instance", reason: "exactly one of --next-hop-instance, --next-hop-gateway or --next-hop-vpn-tunnel is required")
        }
        if let instance = nextHopInstance { route.nextHop.instance = instance }
        if let gateway = nextHopGateway {
          guard gateway == "default-internet-gateway" else {
            throw FlagError(flag: "--next-hop-gateway", reason: "the only gateway is default-internet-gateway")
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
struct NatRulesCommand: AsyncParsableCommand {
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
      try await NatRulesCommand.edit(session, region: where_.region, router: where_.router, nat: where_.nat, format: global.format) { rules in
        if rules.contains(where: { $0.ruleNumber == number }) {
          throw FlagError(flag: "RULE_NUMBER", reason: "rule \(number) already exists")
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
      try await NatRulesCommand.edit(session, region: where_.region, router: where_.router, nat: where_.nat, format: global.format) { rules in
        guard let i = rules.firstIndex(where: { $0.ruleNumber == number }) else {
          throw FlagError(flag: "RULE_NUMBER", reason: "rule \(number) not found")
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
      try await NatRulesCommand.edit(session, region: where_.region, router: where_.router, nat: where_.nat, format: global.format) { rules in
        guard rules.contains(where: { $0.ruleNumber == number }) else { throw FlagError(flag: "RULE_NUMBER", reason: "rule \(number) not found") }
        rules.removeAll { $0.ruleNumber == number }
      }
    }
  }
}

/// `hostnat compute networks vpc-access connectors ...` (gcloud's path, kept whole so that the
/// seed's commands read the same).
struct ComputeCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "compute", abstract: "gcloud compute paths that hostnat models (networks vpc-access connectors).",
    subcommands: [ComputeNetworks.self])

  struct ComputeNetworks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "networks", subcommands: [VpcAccess.self])
  }

  struct VpcAccess: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "vpc-access", subcommands: [ConnectorsCommand.self])
  }
}

/// Serverless VPC Access connectors.
struct ConnectorsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "connectors", abstract: "Serverless VPC Access connectors: serverless services reach the VPC (and Cloud NAT) through them.",
    subcommands: [Create.self, Describe.self, List.self, Delete.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a connector; its instances are VMs in its /28 and NAT like any VM.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option var region: String
    @Option(help: "Network (with --range).") var network: String?
    @Option(help: "A dedicated /28 for the connector's instances.") var range: String?
    @Option(help: "An existing /28 subnet instead of --range.") var subnet: String?
    @Option(help: "2-9 (default 2).") var minInstances: UInt32 = 2
    @Option(help: "3-10 (default 10).") var maxInstances: UInt32 = 10
    @Option(help: "Hosts to place its instances on, A,B,... (default: every agent host).") var hosts: [String] = []
    @Option(help: "Project.") var project: String?
    func run() async throws {
      let session = AdminSession(command: "compute.networks.vpc-access.connectors.create", global: global)
      let connector = try session.check { () throws(FlagError) -> Hostnat_V1_ServerlessConnector in
        guard (range == nil) != (subnet == nil) else {
          throw FlagError(flag: "--range", reason: "give exactly one of --range (with --network) or --subnet")
        }
        var c = Hostnat_V1_ServerlessConnector()
        c.name = name
        c.region = region
        c.network = network ?? ""
        if let range { c.ipCidrRange = try Parse.cidr(range, flag: "--range") }
        c.subnet = subnet ?? ""
        c.minInstances = minInstances
        c.maxInstances = maxInstances
        c.hosts = Parse.commaList(hosts)
        c.project = project ?? ""
        return c
      }
      try await session.run { admin in
        let created = try await admin.createServerlessConnector(.with { $0.connector = connector }, options: AdminSession.callOptions)
        Console.err("Created [projects/\(created.project.isEmpty ? "default" : created.project)/locations/\(region)/connectors/\(name)].\n")
        Render.connectors([created], format: global.format ?? .table, single: true)
      }
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a connector (state, network, ipCidrRange, instances).")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option var region: String?
    func run() async throws {
      try await AdminSession(command: "compute.networks.vpc-access.connectors.describe", global: global).run { admin in
        let c = try await admin.getServerlessConnector(.with { $0.name = name; $0.region = region ?? "" }, options: AdminSession.callOptions)
        Render.connectors([c], format: global.format ?? .yaml, single: true)
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List connectors.")
    @OptionGroup var global: GlobalOptions
    @Option var region: String?
    func run() async throws {
      try await AdminSession(command: "compute.networks.vpc-access.connectors.list", global: global).run { admin in
        let response = try await admin.listServerlessConnectors(.with { $0.region = region ?? "" }, options: AdminSession.callOptions)
        Render.connectors(response.connectors, format: global.format ?? .table, single: false)
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a connector no service uses.")
    @OptionGroup var global: GlobalOptions
    @Argument var name: String
    @Option var region: String?
    func run() async throws {
      try await AdminSession(command: "compute.networks.vpc-access.connectors.delete", global: global).run { admin in
        let response = try await admin.deleteServerlessConnector(.with { $0.name = name; $0.region = region ?? "" }, options: AdminSession.callOptions)
        Render.deleted("connectors/\(name)", response, format: global.format)
      }
    }
  }
}

/// `hostnat run ...` (Cloud Run services, egress only).
struct RunCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run", abstract: "Serverless services (Cloud Run) and how their egress reaches the Internet.",
    subcommands: [Deploy.self, ServicesCommand.self])

  struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Deploy (create or replace) a service.")
    @OptionGroup var global: GlobalOptions
    @Argument var service: String
    @Option var region: String
    @Option(help: "Instances running (default 1).") var instances: UInt32 = 1
    @Option(help: "Serverless VPC Access connector.") var vpcConnector: String?
    @Option(help: "all-traffic or private-ranges-only (default private-ranges-only).") var vpcEgress: String?
    @Option(help: "Direct VPC egress: network.") var network: String?
    @Option(help: "Direct VPC egress: subnet.") var subnet: String?
    @Option(help: "Direct VPC egress: hosts for its instances, A,B,...") var hosts: [String] = []
    @Option(help: "Ignored: hostnat runs no images (kept so the seed's commands run).") var image: String?
    @Option var project: String?
    func run() async throws {
      let session = AdminSession(command: "run.deploy", global: global)
      let spec = try session.check { () throws(FlagError) -> Hostnat_V1_ServerlessService in
        var s = Hostnat_V1_ServerlessService()
        s.name = service
        s.region = region
        s.instances = instances
        s.vpcConnector = vpcConnector ?? ""
        s.network = network ?? ""
        s.subnet = subnet ?? ""
        s.hosts = Parse.commaList(hosts)
        s.project = project ?? ""
        switch vpcEgress?.lowercased() {
        case nil: s.vpcEgress = .unspecified
        case "all-traffic"?: s.vpcEgress = .allTraffic
        case "private-ranges-only"?: s.vpcEgress = .privateRangesOnly
        default: throw FlagError(flag: "--vpc-egress", reason: "\"\(vpcEgress ?? "")\" is not all-traffic or private-ranges-only")
        }
        return s
      }
      try await session.run { admin in
        let deployed = try await admin.deployService(.with { $0.service = spec }, options: AdminSession.callOptions)
        Console.err("Service [\(deployed.name)] deployed.\n")
        Render.services([deployed], format: global.format ?? .table, single: true)
      }
    }
  }

  struct ServicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "services", subcommands: [Describe.self, List.self, Delete.self])

    struct Describe: AsyncParsableCommand {
      @OptionGroup var global: GlobalOptions
      @Argument var service: String
      @Option var region: String?
      func run() async throws {
        try await AdminSession(command: "run.services.describe", global: global).run { admin in
          let s = try await admin.getService(.with { $0.name = service; $0.region = region ?? "" }, options: AdminSession.callOptions)
          Render.services([s], format: global.format ?? .yaml, single: true)
        }
      }
    }

    struct List: AsyncParsableCommand {
      @OptionGroup var global: GlobalOptions
      @Option var region: String?
      func run() async throws {
        try await AdminSession(command: "run.services.list", global: global).run { admin in
          let response = try await admin.listServices(.with { $0.region = region ?? "" }, options: AdminSession.callOptions)
          Render.services(response.services, format: global.format ?? .table, single: false)
        }
      }
    }

    struct Delete: AsyncParsableCommand {
      @OptionGroup var global: GlobalOptions
      @Argument var service: String
      @Option var region: String?
      func run() async throws {
        try await AdminSession(command: "run.services.delete", global: global).run { admin in
          let response = try await admin.deleteService(.with { $0.name = service; $0.region = region ?? "" }, options: AdminSession.callOptions)
          Render.deleted("services/\(service)", response, format: global.format)
        }
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
