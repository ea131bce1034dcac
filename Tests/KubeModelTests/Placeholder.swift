import XCTest
final class KubeModelTestsPlaceholder: XCTestCase { func testNothing() {} }
