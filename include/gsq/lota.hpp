// lota.hpp: deprecated since 0.2, removed in 0.3; include <gsq/nn/lota.hpp> (the layer) and
// <gsq/optim/tsign_sgd.hpp> (TSignSgd, TSignSchedule) instead.
#pragma once

#include "gsq/nn/lota.hpp"
#include "gsq/optim/tsign_sgd.hpp"
