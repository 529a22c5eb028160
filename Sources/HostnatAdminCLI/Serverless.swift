import ArgumentParser
import HostnatProto
import SwiftProtobuf

// Serverless egress, spelled as gcloud spells it: compute networks vpc-access connectors, run deploy.

/// `hostnat compute networks vpc-access connectors ...` (gcloud's path, kept whole so that the
/// seed's commands read the same).
struct ComputeCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "compute", abstract: "gcloud compute paths that hostnat models (networks vpc-access connectors).",
    subcommands: [ComputeNetworks.self])

  struct ComputeNetworks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "networks", subcommands: [VPCAccess.self])
  }

  struct VPCAccess: AsyncParsableCommand {
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
      let connector = try session.check { () throws(CommandError) -> Hostnat_V1_ServerlessConnector in
        guard (range == nil) != (subnet == nil) else {
          throw CommandError(flag: "--range", reason: "give exactly one of --range (with --network) or --subnet")
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
      let spec = try session.check { () throws(CommandError) -> Hostnat_V1_ServerlessService in
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
        default: throw CommandError(flag: "--vpc-egress", reason: "\"\(vpcEgress ?? "")\" is not all-traffic or private-ranges-only")
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
