// optim.hpp: the optimizers, learning-rate schedules and gradient clipping, one per file under
// optim/, for LoRA adapters over any set of float parameters owned elsewhere.
//
//   optim/parameter.hpp   Parameter {value, grad, size}: all an optimizer sees of a tensor
//   optim/schedule.hpp    ConstantWithWarmup, CosineSchedule
//   optim/clip.hpp        clip_grad_norm (also rejects NaN and Inf gradients)
//   optim/state.hpp       the state blob layout and what every optimizer shares
//   optim/sgd.hpp         Sgd (momentum, decoupled weight decay)
//   optim/adamw.hpp       AdamW, and the one AdamW element update
//   optim/adamw8bit.hpp   AdamW8bit (block-wise 8-bit state, dynamic map)
//   optim/tsign_sgd.hpp   TSignSgd and TSignSchedule, for ternary tensors (LoTA-QAF)
//
// Optimizers are separate from layers: they see only Parameter {value, grad, size} triples and
// never allocate or free the tensors themselves.  One call of step(lr) applies one update from the
// current gradients (it does not zero them; call zero_grad()).  Everything is single-threaded,
// deterministic and free of global floating-point state: the same binary given the same inputs
// produces bit-identical parameters, also across save_state / load_state.
//
// Non-finite gradients are not checked by step() (that would cost a pass per step); they give
// unspecified but memory-safe results.  clip_grad_norm() rejects them, so calling it every step
// (with max_norm <= 0 for no clipping) guards the optimizer.
#pragma once

#include "gsq/optim/adamw.hpp"
#include "gsq/optim/adamw8bit.hpp"
#include "gsq/optim/clip.hpp"
#include "gsq/optim/parameter.hpp"
#include "gsq/optim/schedule.hpp"
#include "gsq/optim/sgd.hpp"
#include "gsq/optim/state.hpp"
#include "gsq/optim/tsign_sgd.hpp"
