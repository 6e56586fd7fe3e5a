-- owner: purchase. Install state is the install function's alone (it answers `installs.states`);
-- purchase's copy of it goes.
DROP TABLE install_states;
