// parameter.hpp: what an optimizer sees of a trainable float tensor.
#pragma once

#include <cstddef>

namespace gsq {

/// One trainable tensor: `size` float master values and their gradient (same size), owned
/// elsewhere.  Both pointers must stay valid while an optimizer uses them; they may be null only
/// when size == 0.
struct Parameter {
  float* value;
  float* grad;
  std::size_t size;
};

}  // namespace gsq
