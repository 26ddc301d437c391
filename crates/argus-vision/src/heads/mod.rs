//! What training produces on top of the frozen backbone: the linear [`classifier`] head (fitted by the
//! L-BFGS logistic regression in [`logreg`]), the dense [`detector`] head and its second [`box_stage`].

pub mod box_stage;
pub mod classifier;
pub mod detector;
pub mod logreg;
