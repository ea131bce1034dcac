import XCTest
final class KubePlanTestsPlaceholder: XCTestCase { func testNothing() {} }
