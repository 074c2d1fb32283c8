// linear.hpp: the Linear concept, what a layer must provide to sit in a model, checked at compile
// time where a model instantiates its layers (models/llama/lora_model.hpp).
#pragma once

#include <type_traits>
#include <utility>
#include <vector>

#include "gsq/nn/options.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

// The Linear concept
// ---------------------------------------------------------------------------------------------
// A layer type L models Linear when, for l of type L and cl of type const L:
//   L(MatrixRef<const float> w, const LoraOptions& o)  builds the layer on the frozen float
//                                                     weight w (in x out, any strides)
//   cl.in_features(), cl.out_features()                convertible to Index
//   typename L::Activation                             the quantized X the layer accepts: what
//                                                     it would make of a float X itself
//   L::quantize_input(MatrixRef<const float> x, const LoraOptions& o, L::Activation& out)
//                                                     makes it, as a layer built with o would
//   l.forward(MatrixRef<const float> x, MatrixRef<float> y)
//                                                     Y = layer(X) for X (T x in) into Y
//                                                     (T x out), saving what backward needs
//   l.forward(const typename L::Activation& xq, MatrixRef<float> y)
//                                                     the same from X already quantized, so
//                                                     layers that read one input (q, k and v;
//                                                     w1 and w3) can share one quantization
//   l.backward(MatrixRef<const float> dy, MatrixRef<float> dx)
//                                                     from dL/dY of the last forward: the
//                                                     layer's own gradients, and dL/dX into dx
//                                                     (T x in) unless dx.data is null
//   l.zero_grad()                                      clears the gradients backward produced
//   cl.memory()                                        a LoraMemory: bytes held, by role
//   cl.effective_weight()                              std::vector<float>, the weight the layer
//                                                     computes with (in x out, row-major), for a
//                                                     float export of the model
// LoraLinear and LotaLinear model it.  A model may use more of a layer in members that need it
// (Llama2LoraModel::parameters() reads LoRA's float adapters, set_mode() its mode); C++ compiles
// those members only for the layers they are called with.

namespace detail {

template <typename L>
using LinearForward = decltype(std::declval<L&>().forward(std::declval<MatrixRef<const float>>(),
                                                          std::declval<MatrixRef<float>>()));
template <typename L>
using LinearForwardQuantized = decltype(std::declval<L&>().forward(
    std::declval<const typename L::Activation&>(), std::declval<MatrixRef<float>>()));
template <typename L>
using LinearQuantizeInput = decltype(L::quantize_input(
    std::declval<MatrixRef<const float>>(), std::declval<const LoraOptions&>(),
    std::declval<typename L::Activation&>()));
template <typename L>
using LinearBackward = decltype(std::declval<L&>().backward(std::declval<MatrixRef<const float>>(),
                                                            std::declval<MatrixRef<float>>()));
template <typename L>
using LinearZeroGrad = decltype(std::declval<L&>().zero_grad());
template <typename L>
using LinearInFeatures = decltype(std::declval<const L&>().in_features());
template <typename L>
using LinearOutFeatures = decltype(std::declval<const L&>().out_features());
template <typename L>
using LinearMemory = decltype(std::declval<const L&>().memory());
template <typename L>
using LinearEffectiveWeight = decltype(std::declval<const L&>().effective_weight());

template <template <typename> class Op, typename L, typename = void>
struct Detected : std::false_type {
  using type = void;
};
template <template <typename> class Op, typename L>
struct Detected<Op, L, std::void_t<Op<L>>> : std::true_type {
  using type = Op<L>;
};

template <template <typename> class Op, typename L, typename R>
inline constexpr bool kReturns = std::is_convertible_v<typename Detected<Op, L>::type, R>;

}  // namespace detail

/// Whether L models Linear (see above).
template <typename L>
inline constexpr bool is_linear_v =
    std::is_constructible_v<L, MatrixRef<const float>, const LoraOptions&> &&
    detail::Detected<detail::LinearForward, L>::value &&
    detail::Detected<detail::LinearForwardQuantized, L>::value &&
    detail::Detected<detail::LinearQuantizeInput, L>::value &&
    detail::Detected<detail::LinearBackward, L>::value &&
    detail::Detected<detail::LinearZeroGrad, L>::value &&
    detail::kReturns<detail::LinearInFeatures, L, Index> &&
    detail::kReturns<detail::LinearOutFeatures, L, Index> &&
    detail::kReturns<detail::LinearMemory, L, LoraMemory> &&
    detail::kReturns<detail::LinearEffectiveWeight, L, std::vector<float>>;

/// A compile-time check that names the first requirement L misses; true if it compiles.  Use it
/// where a model instantiates its layers: static_assert(check_linear<L>()).
template <typename L>
constexpr bool check_linear() {
  static_assert(std::is_constructible_v<L, MatrixRef<const float>, const LoraOptions&>,
                "Linear: needs a constructor L(MatrixRef<const float> w, const LoraOptions&)");
  static_assert(detail::kReturns<detail::LinearInFeatures, L, Index> &&
                    detail::kReturns<detail::LinearOutFeatures, L, Index>,
                "Linear: needs Index in_features() const and Index out_features() const");
  static_assert(detail::Detected<detail::LinearForward, L>::value,
                "Linear: needs forward(MatrixRef<const float> x, MatrixRef<float> y)");
  static_assert(detail::Detected<detail::LinearForwardQuantized, L>::value,
                "Linear: needs a type L::Activation and forward(const L::Activation& xq, "
                "MatrixRef<float> y), the forward of an already quantized X");
  static_assert(detail::Detected<detail::LinearQuantizeInput, L>::value,
                "Linear: needs static quantize_input(MatrixRef<const float>, const LoraOptions&, "
                "L::Activation&), which makes the Activation forward accepts");
  static_assert(detail::Detected<detail::LinearBackward, L>::value,
                "Linear: needs backward(MatrixRef<const float> dy, MatrixRef<float> dx)");
  static_assert(detail::Detected<detail::LinearZeroGrad, L>::value, "Linear: needs zero_grad()");
  static_assert(detail::kReturns<detail::LinearMemory, L, LoraMemory>,
                "Linear: needs LoraMemory memory() const");
  static_assert(detail::kReturns<detail::LinearEffectiveWeight, L, std::vector<float>>,
                "Linear: needs std::vector<float> effective_weight() const");
  return is_linear_v<L>;
}

}  // namespace gsq
