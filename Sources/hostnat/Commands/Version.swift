import ArgumentParser
import HostnatProto

enum HostnatVersion {
  static let string = "0.1.0"
}

struct VersionCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "version",
    abstract: "Print hostnat's version and the control protocol it speaks."
  )

  func run() {
    print("hostnat \(HostnatVersion.string) (control protocol \(HostnatProtocol.package))")
  }
}
