// The steering program's fixture table: every protocol path, the published
// RSS verification vectors, symmetric hashing, VLANs, policies and malformed
// frames. Each fixture says what goes in and exactly what must come out.
#pragma once

#include <vector>

#include "tests/bpf/fixture_runner.h"

namespace xvio::testing {

std::vector<Fixture> SteeringFixtures();

}  // namespace xvio::testing
